"""Hooks for the mmengine Runner."""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook, LoggerHook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS


def get_rng_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and python ``random`` states as tensors, lists and ints.

    These types load under ``torch.load(weights_only=True)``.
    """
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    states = dict(
        torch=torch.get_rng_state(),
        numpy=[bit_generator, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        python=[version, list(internal), gauss_next])
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_states`."""
    torch.set_rng_state(states['torch'])
    bit_generator, keys, pos, has_gauss, cached_gaussian = states['numpy']
    np.random.set_state(
        (bit_generator, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = states['python']
    random.setstate((version, tuple(internal), gauss_next))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'][:torch.cuda.device_count()])


# In mmengine's root registry so mmdet/mmseg scopes find it too; in mmpretrain's
# so it also resolves where that scope's registry is searched alone.
@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the global RNG states in checkpoints and restore them on load.

    With ``num_workers=0`` the data transforms draw from the main process's global
    RNGs, so resuming at an epoch boundary reproduces the uninterrupted run only if
    those states are restored. States go to ``checkpoint['meta']['rng_state']``.
    Limits: the states are rank 0's (checkpoints are saved by rank 0 only), and an
    iteration-based resume replays the data it skips, which draws from the RNGs again.
    """

    priority = 'VERY_LOW'  # restore after every other hook's ``before_train``

    def __init__(self) -> None:
        self._loaded_states: Optional[dict[str, Any]] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_state'] = get_rng_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get('meta', {}).get('rng_state')
        if states is not None:
            set_rng_states(states)
            self._loaded_states = states

    def before_train(self, runner) -> None:
        # ``Runner.resume`` re-seeds after ``after_load_checkpoint`` when the
        # checkpoint's seed differs from the config's: restore once more.
        if self._loaded_states is not None:
            set_rng_states(self._loaded_states)
            self._loaded_states = None


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
