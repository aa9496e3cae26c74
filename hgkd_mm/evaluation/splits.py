"""The fixed labelled split used to judge a pre-trained student, and its unlabeled pool.

``caltech101/train`` is split once, per class, into ``train`` / ``val`` / ``test``
(60 / 20 / 20, seed 0). The pre-training pool is imagenet-sample plus the ``train`` part
only, so no val or test image is ever seen during pre-training. The files are committed
(``configs/splits/``); :func:`make_split` regenerates them and a test checks that the
committed ones are what it makes.

File format (mmpretrain ``CustomDataset`` ann files, paths relative to the shared data
root): ``caltech101_{train,val,test}.txt`` hold ``<path> <label>`` lines, ``label`` the
index of the class folder in sorted order; ``pool.txt`` holds ``<path>`` lines.
"""
from __future__ import annotations

import os
import os.path as osp
import random
from typing import Dict, List, Sequence, Tuple

from hgkd_mm.datasets.image_folder import IMAGE_EXTENSIONS

SPLIT_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                     'configs', 'splits')
LABELLED = 'caltech101/train'
UNLABELLED = ('imagenet-sample', )
PARTS = ('train', 'val', 'test')
FRACTIONS = (0.6, 0.2, 0.2)
SEED = 0


def list_images(folder: str) -> List[str]:
    """Every image file under ``folder`` (any depth), sorted, as paths relative to it."""
    found = []
    for root, _, files in os.walk(folder):
        found += [osp.relpath(osp.join(root, name), folder) for name in files
                  if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def make_split(data_root: str, seed: int = SEED,
               fractions: Sequence[float] = FRACTIONS) -> Dict[str, List[Tuple[str, int]]]:
    """``{'train'|'val'|'test': [(path, label), ...]}`` from ``data_root/caltech101/train``.

    Per class the images are shuffled with ``random.Random(seed + label)``; the first
    ``round(n * fractions[2])`` go to test, the next ``round(n * fractions[1])`` to val,
    the rest to train.
    """
    root = osp.join(data_root, LABELLED)
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root} not found: the labelled split needs the shared data')
    classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    split: Dict[str, List[Tuple[str, int]]] = {part: [] for part in PARTS}
    for label, name in enumerate(classes):
        images = [osp.join(LABELLED, name, f) for f in list_images(osp.join(root, name))]
        random.Random(seed + label).shuffle(images)
        n_test, n_val = round(len(images) * fractions[2]), round(len(images) * fractions[1])
        split['test'] += [(p, label) for p in images[:n_test]]
        split['val'] += [(p, label) for p in images[n_test:n_test + n_val]]
        split['train'] += [(p, label) for p in images[n_test + n_val:]]
    return {part: sorted(items) for part, items in split.items()}


def make_pool(data_root: str, train: Sequence[Tuple[str, int]]) -> List[str]:
    """The unlabeled pre-training pool: every image of ``UNLABELLED`` + the train part."""
    pool = []
    for source in UNLABELLED:
        pool += [osp.join(source, p) for p in list_images(osp.join(data_root, source))]
    return sorted(pool + [path for path, _ in train])


def write_split(data_root: str, out_dir: str = SPLIT_DIR) -> Dict[str, str]:
    """Write the three labelled parts and the pool to ``out_dir``; returns their paths."""
    split = make_split(data_root)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    for part, items in split.items():
        files[part] = osp.join(out_dir, f'caltech101_{part}.txt')
        with open(files[part], 'w') as f:
            f.write(''.join(f'{path} {label}\n' for path, label in items))
    files['pool'] = osp.join(out_dir, 'pool.txt')
    with open(files['pool'], 'w') as f:
        f.write(''.join(f'{path}\n' for path in make_pool(data_root, split['train'])))
    return files


def read_split(part: str, split_dir: str = SPLIT_DIR) -> List[Tuple[str, int]]:
    """``[(path, label), ...]`` of a committed labelled part (``train``, ``val``, ``test``)."""
    if part not in PARTS:
        raise ValueError(f'split part must be one of {PARTS}, got {part!r}')
    path = osp.join(split_dir, f'caltech101_{part}.txt')
    if not osp.isfile(path):
        raise FileNotFoundError(f'split file {path} not found')
    with open(path) as f:
        rows = [line.rsplit(' ', 1) for line in f.read().splitlines() if line.strip()]
    return [(p, int(label)) for p, label in rows]


def read_pool(split_dir: str = SPLIT_DIR) -> List[str]:
    """The committed pre-training pool (paths relative to the shared data root)."""
    with open(osp.join(split_dir, 'pool.txt')) as f:
        return [line for line in f.read().splitlines() if line.strip()]
