"""RNGStateHook saves the global RNG states in weights_only-safe types and restores them on
resume: on any map_location, per rank in a distributed run, and not on ``load_from``."""
import random
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from hgkd_mm.engine import RNGStateHook


def draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def reseed(seed: int) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def resumed(iteration: int = 5) -> SimpleNamespace:
    """The runner attributes the hook reads; ``iter`` is 0 after ``load_from``; no epoch
    loop (whose dataloader workers the hook would seed: tests/datasets/test_sample_seed.py)."""
    return SimpleNamespace(iter=iteration, logger=mock.Mock(), train_loop=None)


def test_registered_for_every_scope():
    assert HOOKS.get('RNGStateHook') is RNGStateHook
    assert PRETRAIN_HOOKS.get('RNGStateHook') is RNGStateHook


def test_save_then_resume_restores_the_states_on_any_map_location(tmp_path):
    hook = RNGStateHook()
    np.random.randn()  # a cached gaussian is part of numpy's state
    checkpoint = dict(meta=dict(epoch=1))
    hook.before_save_checkpoint(resumed(), checkpoint)
    expected = draw()

    path = tmp_path / 'rng.pth'
    torch.save(checkpoint, path)
    # a fresh interpreter: no allowlist from hgkd_mm, so only plain types load
    subprocess.run([sys.executable, '-c', f'import torch; torch.load({str(path)!r})'], check=True)

    # mmengine's resume loads onto the GPU; 'meta' stands in for any device but the CPU
    for map_location in ('cpu', 'meta'):
        reseed(123)
        hook.after_load_checkpoint(None, torch.load(path, map_location, weights_only=True))
        hook.before_train(resumed())
        assert draw() == expected


def test_tensor_states_of_earlier_checkpoints_still_restore():
    checkpoint = dict(meta=dict())
    RNGStateHook().before_save_checkpoint(resumed(), checkpoint)
    expected = draw()
    states = checkpoint['meta']['rng_state']
    states['torch'] = torch.frombuffer(bytearray(states['torch']), dtype=torch.uint8)
    reseed(3)
    hook = RNGStateHook()
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train(resumed())
    assert draw() == expected


def test_load_from_keeps_the_seeded_states():
    checkpoint = dict(meta=dict())
    RNGStateHook().before_save_checkpoint(resumed(), checkpoint)
    reseed(7)
    expected = draw()
    reseed(7)
    hook = RNGStateHook()
    hook.after_load_checkpoint(None, checkpoint)
    hook.before_train(resumed(iteration=0))
    assert draw() == expected


def rank_worker(rank: int, world: int, init_file: str, ckpt_file: str, result_file: str):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    reseed(rank)  # diff_rank_seed
    hook, runner = RNGStateHook(), resumed(iteration=10)
    hook.after_train_epoch(runner)  # every rank
    if rank == 0:  # rank 0 saves the checkpoint; one without the per-rank states beside it
        checkpoint = dict(meta=dict())
        hook.before_save_checkpoint(runner, checkpoint)
        torch.save(checkpoint, ckpt_file)
        checkpoint = dict(meta=dict())
        hook.before_save_checkpoint(resumed(iteration=11), checkpoint)  # mid-epoch
        assert 'rng_state_ranks' not in checkpoint['meta']
        torch.save(checkpoint, ckpt_file + '.mid')
    dist.barrier()
    expected = draw()
    results = {}
    for name in ('epoch', 'mid'):
        reseed(100 + rank)  # a fresh run's seed
        seeded = draw()
        reseed(100 + rank)
        hook = RNGStateHook()
        path = ckpt_file if name == 'epoch' else ckpt_file + '.mid'
        hook.after_load_checkpoint(None, torch.load(path, weights_only=True))
        runner = resumed()
        hook.before_train(runner)
        results[name] = (draw(), runner.logger.warning.called)
    results['expected'], results['seeded'] = expected, seeded
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        torch.save(gathered, result_file)
    dist.destroy_process_group()


def test_distributed_resume_restores_every_rank_its_own_states(tmp_path):
    result_file = str(tmp_path / 'result.pt')
    mp.spawn(rank_worker, nprocs=2, join=True,
             args=(2, str(tmp_path / 'init'), str(tmp_path / 'ckpt.pth'), result_file))
    ranks = torch.load(result_file, weights_only=False)
    assert ranks[0]['expected'] != ranks[1]['expected']
    for result in ranks:
        assert result['epoch'] == (result['expected'], False)
    # mid-epoch checkpoint: rank 0 restores its own, rank 1 keeps its seeded states
    assert ranks[0]['mid'] == (ranks[0]['expected'], True)
    assert ranks[1]['mid'] == (ranks[1]['seeded'], True)
