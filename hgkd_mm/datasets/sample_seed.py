"""Data augmentation that depends on (seed, epoch, sample index) only, not on worker history."""
from __future__ import annotations

import multiprocessing
import random
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info


class SeedSample:
    """A pipeline step that seeds python, numpy and torch from (seed, epoch, sample index)
    in a dataloader worker, before the sample's transforms draw from them.

    A worker's RNG states depend on everything it drew before: with persistent workers, on
    how many epochs it has lived, which starts again at a resume. Seeded per sample, a
    sample's augmentation is the same after a resume and with any number of workers. In
    the main process (``num_workers=0``) the RNGs are left alone: ``RNGStateHook``
    restores those. ``epoch`` is shared with the workers; set it before each epoch.

    When the pipeline drops a sample (returns None: an unreadable image skipped), mmengine's
    dataset loads a random other one, drawn from these RNGs; that one is not seeded again
    (``sample_done``, the pipeline's last step, was not reached), so the replacements
    continue the requested sample's stream instead of cycling between dropped samples.
    """

    def __init__(self, seed: int, epoch: int = 0) -> None:
        self.seed = seed
        self.epoch = multiprocessing.Value('q', epoch)
        self._in_progress = False  # per worker process: a sample was seeded, not yet done

    def __call__(self, results: dict) -> dict:
        index = results.get('sample_idx')
        if get_worker_info() is not None and index is not None and not self._in_progress:
            words = np.random.SeedSequence([self.seed, self.epoch.value, index]).generate_state(4)
            random.seed(int(words[0]) << 32 | int(words[1]))
            np.random.seed(words)
            torch.manual_seed(int(words[2]) << 32 | int(words[3]))
            self._in_progress = True
        return results

    def sample_done(self, results: dict) -> dict:
        self._in_progress = False
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(seed={self.seed})'


def seed_samples(dataloader: DataLoader, seed: int) -> Optional[SeedSample]:
    """Make ``dataloader``'s workers seed each sample with :class:`SeedSample`.

    Call before its workers start (before the first epoch). Also gives the dataloader its
    own generator: creating a worker iterator draws the workers' base seed from it, which
    otherwise comes from torch's global RNG, once per run with persistent workers (so a
    resumed run would draw once more than the uninterrupted one and shift every later
    mask). Returns None, changing nothing, with ``num_workers=0``.
    """
    if dataloader.num_workers == 0:
        return None
    dataloader.generator = torch.Generator().manual_seed(seed)
    seeder = SeedSample(seed)
    for dataset in leaf_datasets(dataloader.dataset):
        transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None)
        if transforms is None:
            raise TypeError(f'seed_samples: {type(dataset).__name__} has no pipeline.transforms '
                            'list to seed its samples in')
        transforms.insert(0, seeder)
        transforms.append(seeder.sample_done)
    return seeder


def leaf_datasets(dataset) -> Iterator:
    """``dataset`` or, through mmengine's wrappers (``dataset``/``datasets``), its parts."""
    if hasattr(dataset, 'datasets'):
        for part in dataset.datasets:
            yield from leaf_datasets(part)
    elif hasattr(dataset, 'dataset'):
        yield from leaf_datasets(dataset.dataset)
    else:
        yield dataset
