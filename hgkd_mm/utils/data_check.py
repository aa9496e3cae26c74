"""Fail before the Runner starts when a dataset's files are missing.

mmengine only notices a missing dataset when it builds the dataloader, often after
the model is built and with an error far from the config. This check names the
missing path and the config key that points at it.
"""
from __future__ import annotations

import os.path as osp
from typing import Iterator, Mapping, Sequence

from mmengine.config import Config

DATALOADER_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def check_data_paths(cfg: Config | Mapping, keys: Sequence[str] = DATALOADER_KEYS) -> None:
    """Raise ``FileNotFoundError`` if a dataset of ``cfg`` points at a missing path.

    Checks ``data_root``, ``ann_file`` (joined to ``data_root`` unless absolute),
    mmpretrain's ``split`` folder when there is no ``data_prefix``, and every
    ``data_prefix`` directory (mmpretrain's string form, mmdet's
    ``dict(img=...)``, mmseg's ``dict(img_path=..., seg_map_path=...)``) of the
    dataset of each dataloader in ``keys``, looking through wrappers with
    ``dataset``/``datasets`` keys. A top-level ``data_hint`` string is appended to
    the message.
    """
    missing = []
    for key in keys:
        loader = cfg.get(key)
        if not isinstance(loader, Mapping) or not isinstance(loader.get('dataset'), Mapping):
            continue
        for ds_key, dataset in _iter_datasets(loader['dataset'], f'{key}.dataset'):
            missing += _missing_paths(dataset, ds_key)
    if not missing:
        return
    lines = [f'  {path}  ({key})' for path, key in missing]
    message = 'Dataset paths not found:\n' + '\n'.join(lines)
    if cfg.get('data_hint'):
        message += f'\n{cfg["data_hint"]}'
    raise FileNotFoundError(message)


def _iter_datasets(dataset: Mapping, key: str) -> Iterator[tuple[str, Mapping]]:
    """Yield ``(config key, dataset cfg)`` for a dataset and every dataset it wraps."""
    yield key, dataset
    if isinstance(dataset.get('dataset'), Mapping):
        yield from _iter_datasets(dataset['dataset'], f'{key}.dataset')
    for i, inner in enumerate(dataset.get('datasets') or []):
        if isinstance(inner, Mapping):
            yield from _iter_datasets(inner, f'{key}.datasets.{i}')


def _missing_paths(dataset: Mapping, key: str) -> list[tuple[str, str]]:
    """``(path, config key)`` pairs of the missing local paths of one dataset cfg."""
    if dataset.get('download'):  # e.g. CIFAR: the dataset fetches its own files
        return []
    data_root = dataset.get('data_root') or ''
    if data_root and not _exists(data_root):
        return [(data_root, f'{key}.data_root')]  # everything below it is missing too
    candidates = []
    ann_file = dataset.get('ann_file')
    if isinstance(ann_file, str) and ann_file:
        candidates.append((ann_file, f'{key}.ann_file'))
    prefix = dataset.get('data_prefix')
    split = dataset.get('split')
    if not prefix and isinstance(split, str) and split:
        # mmpretrain's ImageNet/ImageNet21k read the split's folder (``data_root/train``)
        candidates.append((split, f'{key}.split'))
    if isinstance(prefix, str):
        prefix = {'': prefix}
    for name, folder in (prefix or {}).items():
        if isinstance(folder, str) and folder:
            candidates.append((folder, f'{key}.data_prefix' + (f'.{name}' if name else '')))
    missing = []
    for path, path_key in candidates:
        full = path if osp.isabs(path) else osp.join(data_root, path)
        if not _exists(full):
            missing.append((full, path_key))
    return missing


def _exists(path: str) -> bool:
    # Remote storage (s3://, http://) is the file backend's business, not ours.
    return '://' in path or osp.exists(path)
