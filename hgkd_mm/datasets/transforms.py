"""Data transforms."""
from __future__ import annotations

import logging
import multiprocessing
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log

from mmpretrain.registry import TRANSFORMS

ON_ERROR = ('raise', 'skip')


@TRANSFORMS.register_module()
class LoadImageOrRaise(LoadImageFromFile):
    """``LoadImageFromFile`` whose failure always names the file.

    mmcv's loader reports an undecodable file with an ``assert`` (gone under
    ``python -O``) or, with the pillow backend, without its path.

    Args:
        on_error: ``'raise'`` (default): a file that cannot be read or decoded stops the
            run with an ``OSError`` naming it. ``'skip'``: it is logged (a warning with
            its path) and the transform returns None, on which mmengine's training
            datasets load another, random sample in its place; ``SkippedImagesHook``
            logs how many were skipped at the end of each epoch.
        **kwargs: ``LoadImageFromFile``'s arguments.
    """

    def __init__(self, on_error: str = 'raise', **kwargs) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f'LoadImageOrRaise: on_error must be one of {ON_ERROR}, '
                             f'got {on_error!r}')
        super().__init__(**kwargs)
        self.on_error = on_error
        # files skipped in this run: shared with the dataloader's workers, which load
        self.skipped = multiprocessing.Value('q', 0) if on_error == 'skip' else None
        self._reported = 0  # the count at the last take_skipped()

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        try:
            loaded = super().transform(results)
            if loaded is None or loaded.get('img') is None:
                raise OSError('empty or undecodable file')
        except Exception as e:
            if self.on_error == 'raise':
                raise OSError(f'cannot read image {path}: {e}') from e
            with self.skipped.get_lock():
                self.skipped.value += 1
                count = self.skipped.value
            # numbered: mmengine's logger shows a repeated warning only once
            print_log(f'skipped image {path} (#{count} in this run): {e}', logger='current',
                      level=logging.WARNING)
            return None
        return loaded

    def take_skipped(self) -> int:
        """How many files were skipped since the last call (0 with ``on_error='raise'``)."""
        if self.skipped is None:
            return 0
        total = self.skipped.value
        count, self._reported = total - self._reported, total
        return count

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", on_error='{self.on_error}')"
