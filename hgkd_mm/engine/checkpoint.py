"""Checkpoints that survive a crash at any moment and never hold non-finite weights."""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Union
from unittest import mock

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.hooks import checkpoint_hook as mmengine_checkpoint_hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from hgkd_mm.utils.checkpoint_io import atomic_write, remove_partial_files

ATOMIC_BACKEND = 'local_atomic'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes replace a file only once complete
    (:func:`hgkd_mm.utils.checkpoint_io.atomic_write`)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        with atomic_write(str(filepath)) as file:
            file.write(obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


# by name only (no prefix): chosen through backend_args=dict(backend='local_atomic')
register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is untouched."""


class NonFiniteWeightsError(FloatingPointError):
    """The model holds NaN or Inf: it is not saved."""


def non_finite_entries(model: torch.nn.Module) -> list:
    """Names of the model's floating-point parameters and buffers holding NaN or Inf."""
    if is_model_wrapper(model):
        model = model.module
    return [name for name, value in model.state_dict().items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


# In mmengine's root registry so mmdet/mmseg scopes find it too (tools/train.py uses it in
# place of CheckpointHook for every config); in mmpretrain's for that scope searched alone.
@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that never leaves the run without a readable checkpoint.

    mmengine 0.10.7 writes a checkpoint in place, deletes the oldest kept one
    (``max_keep_ckpts``) *before* the new one is written, and writes ``last_checkpoint``
    in place: a process killed while saving can leave no readable checkpoint and a
    ``last_checkpoint`` naming a partial file. Here, on a local ``out_dir``:

    - every file is written to a temporary file, fsynced and renamed (``local_atomic``
      backend), so a checkpoint file is complete or absent;
    - ``last_checkpoint`` is written the same way after the checkpoint is complete, and
      only then are checkpoints beyond ``max_keep_ckpts`` deleted (a crash in between
      leaves one file more, never one less);
    - a failed write (disk full) raises :class:`CheckpointWriteError` naming the file and
      the previous checkpoint, which stays readable;
    - weights holding NaN or Inf are never saved (:class:`NonFiniteWeightsError`);
    - temporary files of a run killed mid-save are removed when training starts.

    Takes ``CheckpointHook``'s arguments. Given ``backend_args``, ``file_client_args`` or a
    remote ``out_dir``, writing is left to that backend (the other guarantees hold).
    """

    def __init__(self, *args, out_dir: Optional[str] = None, backend_args: Optional[dict] = None,
                 file_client_args: Optional[dict] = None, **kwargs) -> None:
        if backend_args is None and file_client_args is None and '://' not in str(out_dir or ''):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, out_dir=out_dir, backend_args=backend_args,
                         file_client_args=file_client_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend):
            for path in remove_partial_files(self.out_dir) + remove_partial_files(
                    runner.work_dir):
                runner.logger.warning(f'removed {path}, left by a run stopped while saving')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(step))
        previous = runner.message_hub.get_info('last_ckpt')
        bad = non_finite_entries(runner.model)
        if bad:
            raise NonFiniteWeightsError(
                f'not saving {path}: NaN or Inf in {len(bad)} weights ({", ".join(bad[:5])}). '
                f'Last checkpoint saved: {previous or "none"}')
        kept_before = list(getattr(self, 'keep_ckpt_ids', ()))
        # mmengine deletes the oldest kept checkpoint before writing the new one and writes
        # last_checkpoint in place, both on the main process only: let it do its bookkeeping
        # as if it were not the main process, and do these two once the new file is complete
        with mock.patch.object(mmengine_checkpoint_hook, 'is_main_process', return_value=False):
            try:
                super()._save_checkpoint_with_step(runner, step, meta)
            except OSError as error:
                raise CheckpointWriteError(
                    f'could not write checkpoint {path}: {error}. The previous checkpoint '
                    f'{previous or "(none)"} is unchanged.') from error
        if not is_main_process():
            return
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint')) as file:
            file.write(str(self.last_ckpt).encode())
        for old_step in set(kept_before) - set(getattr(self, 'keep_ckpt_ids', ())):
            old_path = self.file_backend.join_path(self.out_dir,
                                                   self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(old_path):
                self.file_backend.remove(old_path)
