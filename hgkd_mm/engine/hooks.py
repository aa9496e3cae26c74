"""Hooks for the mmengine Runner."""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from hgkd_mm.datasets.sample_seed import SeedSample, seed_samples


def get_rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python ``random`` states as bytes, lists and ints.

    These types load under ``torch.load(weights_only=True)``, and a ``map_location`` (mmengine's
    resume loads onto the GPU) does not move them.
    """
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states = dict(
        torch=bytes(torch.get_rng_state().numpy()),
        numpy=[bit_generator, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        python=[version, list(internal), gauss_next])
    if torch.cuda.is_available():
        states['cuda'] = [bytes(state.numpy()) for state in torch.cuda.get_rng_state_all()]
    return states


def _byte_tensor(state) -> Tensor:
    """A CPU ``uint8`` tensor, as ``torch.set_rng_state`` needs, from bytes or a tensor (the
    format before bytes, which a ``map_location`` may have put on another device)."""
    if isinstance(state, bytes):
        return torch.frombuffer(bytearray(state), dtype=torch.uint8)
    return state.cpu()


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_states`."""
    torch.set_rng_state(_byte_tensor(states['torch']))
    bit_generator, keys, pos, has_gauss, cached_gaussian = states['numpy']
    np.random.set_state(
        (bit_generator, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = states['python']
    random.setstate((version, tuple(internal), gauss_next))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [_byte_tensor(state) for state in states['cuda'][:torch.cuda.device_count()]])


# In mmengine's root registry so mmdet/mmseg scopes find it too; in mmpretrain's
# so it also resolves where that scope's registry is searched alone.
@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the global RNG states in checkpoints and restore them on resume.

    With ``num_workers=0`` the data transforms draw from the main process's global
    RNGs, and the masks and drop path from torch's, so resuming at an epoch boundary
    reproduces the uninterrupted run only if those states are restored. States go to
    ``checkpoint['meta']['rng_state']`` (this process's; rank 0 saves the checkpoint) and,
    in a distributed run, every rank's to ``checkpoint['meta']['rng_state_ranks']``:
    they are gathered at the end of each training epoch, before ``CheckpointHook`` saves.

    With dataloader workers the transforms draw from the workers' RNGs instead: the hook
    makes each worker seed every sample from (seed, epoch, sample index)
    (:func:`hgkd_mm.datasets.sample_seed.seed_samples`), so the augmentation after a resume
    is that of the uninterrupted run, persistent workers included.

    On resume (not on ``load_from``, which starts at iteration 0 with the config's seed)
    each rank restores its own states. A distributed resume from a checkpoint without
    them (saved mid-epoch, or with another number of processes) restores rank 0's on
    rank 0 only, with a warning; the other ranks keep their seeded states, which differ
    between ranks (``diff_rank_seed``) but repeat earlier draws. An iteration-based
    resume replays the data it skips, which draws from the RNGs again.
    """

    priority = 'LOW'  # before CheckpointHook (VERY_LOW) at the end of an epoch

    def __init__(self) -> None:
        self._loaded: Optional[dict[str, Any]] = None
        self._gathered: Optional[tuple[int, list]] = None  # (iteration, every rank's)
        self._sample_seed: Optional[SeedSample] = None

    def before_train_epoch(self, runner) -> None:
        if self._sample_seed is not None:  # before the epoch's first batch is requested
            self._sample_seed.epoch.value = runner.epoch

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1:  # every rank runs this; only rank 0 saves
            self._gathered = (runner.iter, all_gather_object(get_rng_states()))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {})
        meta['rng_state'] = get_rng_states()
        if self._gathered is not None and self._gathered[0] == runner.iter:
            meta['rng_state_ranks'] = self._gathered[1]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = checkpoint.get('meta', {})

    def before_train(self, runner) -> None:
        # after ``Runner.resume``, which re-seeds when the checkpoint's seed differs from
        # the config's; a checkpoint from ``load_from`` leaves the run at iteration 0
        if isinstance(runner.train_loop, EpochBasedTrainLoop):  # an iteration loop replays
            self._sample_seed = seed_samples(runner.train_dataloader, runner.seed)
        meta, self._loaded = self._loaded, None
        if not meta or 'rng_state' not in meta or runner.iter == 0:
            return
        world, rank = get_world_size(), get_rank()
        ranks = meta.get('rng_state_ranks')
        if world == 1:
            set_rng_states(meta['rng_state'])
        elif ranks is not None and len(ranks) == world:
            set_rng_states(ranks[rank])
        else:
            runner.logger.warning(
                f'RNGStateHook: the checkpoint has no RNG states for {world} processes '
                f"({'none' if ranks is None else len(ranks)} saved); rank 0 restores its own, "
                'the other ranks keep their seeded states')
            if rank == 0:
                set_rng_states(meta['rng_state'])


@HOOKS.register_module()
class RankZeroLoggerHook(LoggerHook):
    """mmengine's ``LoggerHook`` whose test metrics file is written by the main process only.

    In mmengine 0.10.7 ``LoggerHook.after_test_epoch`` runs on every rank, and each rank
    writes ``<work_dir>/<timestamp>/<timestamp>.json`` (same name: the timestamp is
    broadcast) in ``'w'`` mode: with several processes the writes can interleave into a
    file that is not JSON. ``tools/test.py`` uses this hook in place of ``LoggerHook``.
    """

    def after_test_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        if is_main_process():
            super().after_test_epoch(runner, metrics)


@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class DeferredGradNormHook(Hook):
    """Log the clipped gradient norm after the iteration, not inside the optimizer step.

    mmengine's ``OptimWrapper`` logs the norm returned by ``clip_grad_norm_`` with
    ``float()`` between the backward pass and the optimizer step; on a GPU the host waits
    there for the backward pass before it launches the optimizer. This hook keeps the norm
    on the device during the step and logs it in ``after_train_iter``, after mmengine's
    ``RuntimeInfoHook`` has read the losses (the iteration's own sync) and before
    ``LoggerHook`` prints: the same ``train/grad_norm`` values. Wrappers without norm
    clipping are left alone.
    """

    priority = 'NORMAL'  # after RuntimeInfoHook (VERY_HIGH), before LoggerHook (BELOW_NORMAL)

    def __init__(self) -> None:
        self._pending: dict = {}  # wrapper -> this iteration's norm (a device tensor)

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        for wrapper in wrappers:
            clip = getattr(wrapper, 'clip_func', None)
            if getattr(wrapper, 'grad_name', None) == 'grad_norm' and not hasattr(clip, 'hook'):
                wrapper.clip_func = self._keep_norm(wrapper, clip)  # once per wrapper

    def _keep_norm(self, wrapper, clip):

        def clip_grad_norm(params, **kwargs):
            self._pending[wrapper] = clip(params, **kwargs).detach()
            return None  # a returned norm is logged with float(): the sync this avoids

        clip_grad_norm.hook = self
        return clip_grad_norm

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        for wrapper, norm in self._pending.items():
            wrapper.message_hub.update_scalar(f'train/{wrapper.grad_name}', float(norm))
        self._pending.clear()
