"""With seed_samples, what a dataloader worker draws for a sample depends on (seed, epoch,
index) only: persistent workers started at a later epoch (a resume) draw the same."""
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, ConcatDataset, RepeatDataset
from torch.utils.data import DataLoader, TensorDataset

from hgkd_mm.datasets import SeedSample, sample_seed, seed_samples
from hgkd_mm.datasets.sample_seed import leaf_datasets


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


@pytest.fixture
def in_a_worker(monkeypatch):
    """SeedSample called as in a dataloader worker, in this process."""
    monkeypatch.setattr(sample_seed, 'get_worker_info', lambda: object())


def sample_draws(seeder: SeedSample, index: int, done: bool = True) -> tuple:
    results = draw(seeder(dict(sample_idx=index)))
    if done:
        seeder.sample_done(results)
    return results['draws']


def test_a_sample_draws_from_seed_epoch_and_index_only(in_a_worker):
    seeder = SeedSample(seed=3)
    first = sample_draws(seeder, 5)
    random.random(), np.random.rand(), torch.rand(3)  # whatever the worker drew in between
    assert sample_draws(seeder, 5) == first
    assert sample_draws(SeedSample(seed=3), 5) == first  # another worker
    assert sample_draws(seeder, 6) != first
    assert sample_draws(SeedSample(seed=4), 5) != first
    seeder.epoch.value = 1
    assert sample_draws(seeder, 5) != first
    assert repr(seeder) == 'SeedSample(seed=3)'


def test_a_replacement_for_a_dropped_sample_continues_its_stream(in_a_worker):
    """A sample the pipeline dropped never reaches sample_done: the replacement mmengine
    loads is not seeded again, so it does not repeat the dropped sample's draws."""
    seeder = SeedSample(seed=3)
    dropped = sample_draws(seeder, 5, done=False)
    replacement = sample_draws(seeder, 2)
    assert replacement != dropped and replacement != sample_draws(SeedSample(seed=3), 2)
    assert sample_draws(seeder, 5) == dropped  # seeded again once a sample is done


def test_outside_a_worker_or_without_an_index_nothing_is_seeded(monkeypatch):
    seeder = SeedSample(seed=3)
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    seeder(dict(sample_idx=5))  # the main process: RNGStateHook's RNGs, left alone
    assert np.random.rand() == expected
    monkeypatch.setattr(sample_seed, 'get_worker_info', lambda: object())
    np.random.seed(0)
    seeder(dict())
    assert np.random.rand() == expected


def test_wrapped_datasets_are_seeded_and_a_dataset_without_a_pipeline_is_named():
    parts = [Draws(pipeline=[draw], serialize_data=False) for _ in range(2)]
    assert list(leaf_datasets(RepeatDataset(parts[0], times=2))) == parts[:1]
    wrapped = ConcatDataset(parts)
    assert list(leaf_datasets(wrapped)) == parts
    data = DataLoader(wrapped, batch_size=2, num_workers=1, collate_fn=lambda batch: batch)
    seeder = seed_samples(data, seed=3)
    for part in parts:
        assert part.pipeline.transforms[0] is seeder
        assert part.pipeline.transforms[-1] == seeder.sample_done
    tensors = DataLoader(TensorDataset(torch.zeros(4)), num_workers=1)
    with pytest.raises(TypeError, match='TensorDataset has no pipeline.transforms'):
        seed_samples(tensors, seed=3)
