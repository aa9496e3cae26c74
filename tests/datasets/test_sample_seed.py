"""With seed_samples, what a dataloader worker draws for a sample depends on (seed, epoch,
index) only: persistent workers started at a later epoch (a resume) draw the same."""
import random

import numpy as np
import torch
from mmengine.dataset import BaseDataset
from torch.utils.data import DataLoader

from hgkd_mm.datasets import seed_samples


def draw(results: dict) -> dict:
    results['draws'] = (random.random(), float(np.random.rand()), float(torch.rand(())))
    return results


class Draws(BaseDataset):
    """8 samples whose pipeline draws from python, numpy and torch."""

    def load_data_list(self):
        return [dict(index=i) for i in range(8)]


def loader(num_workers: int) -> DataLoader:
    dataset = Draws(pipeline=[draw], serialize_data=False)
    return DataLoader(dataset, batch_size=2, num_workers=num_workers, shuffle=False,
                      persistent_workers=num_workers > 0, collate_fn=lambda batch: batch)


def epochs(data: DataLoader, first: int, last: int) -> dict:
    seeder = seed_samples(data, seed=3)
    drawn = {}
    for epoch in range(first, last):
        seeder.epoch.value = epoch
        drawn[epoch] = [sample['draws'] for batch in data for sample in batch]
    return drawn


def test_resumed_persistent_workers_draw_as_the_uninterrupted_ones():
    uninterrupted = epochs(loader(2), 0, 3)
    resumed = epochs(loader(2), 2, 3)  # fresh workers, started at epoch 2
    assert resumed[2] == uninterrupted[2]
    assert uninterrupted[1] != uninterrupted[2]  # epochs still differ
    assert len(set(uninterrupted[2])) == 8  # and samples
    assert epochs(loader(1), 2, 3)[2] == uninterrupted[2]  # any number of workers


def test_main_process_loading_is_left_alone():
    data = loader(0)
    assert seed_samples(data, seed=3) is None and data.generator is None
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    list(data)  # draws from the global RNGs, which RNGStateHook restores on resume
    assert not torch.equal(torch.rand(2), expected)
