"""Report the training images skipped as unreadable (``LoadImageOrRaise(on_error='skip')``)."""
from __future__ import annotations

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from hgkd_mm.datasets.sample_seed import leaf_datasets


@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Log, at the end of each training epoch, how many images the loaders skipped.

    Counts the files that ``LoadImageOrRaise(on_error='skip')`` transforms of the training
    dataset skipped during the epoch (in every worker and, summed, every rank); each one's
    path was logged when it was skipped. Silent when no transform skips.
    """

    def after_train_epoch(self, runner) -> None:
        loaders = [transform for dataset in leaf_datasets(runner.train_dataloader.dataset)
                   for transform in getattr(getattr(dataset, 'pipeline', None), 'transforms', [])
                   if getattr(transform, 'on_error', None) == 'skip']
        if not loaders:
            return
        skipped = torch.tensor(sum(loader.take_skipped() for loader in loaders))
        if get_world_size() > 1:  # every rank runs this hook
            all_reduce(skipped)
        runner.logger.info(f'epoch {runner.epoch + 1}: skipped {int(skipped)} unreadable '
                           "training images (each path logged as 'skipped image')")
