"""Masked SyncBN: a 2-process gloo run equals a 1-process run with the same global batch."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hgkd_mm.models.backbones import HGKDSparseResNet

BATCH = 4


def make_problem():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, 3, 64, 64, generator=g, dtype=torch.float64)
    mask = torch.rand(BATCH, 2, 2, generator=g) > 0.4
    mask[:, 0, 0] = True
    weights = torch.randn(BATCH, 512, 2, 2, generator=g, dtype=torch.float64)
    return inputs, mask, weights


def run_step(rank: int, world: int):
    torch.manual_seed(0)
    model = HGKDSparseResNet(18, norm_cfg=dict(type='MaskedSyncBatchNorm2d')).double()
    model.train()
    inputs, mask, weights = make_problem()
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    out = model(inputs[part], mask[part])[-1]
    (out * weights[part]).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    stats = torch.cat([b.flatten().double() for n, b in model.named_buffers() if 'running' in n])
    return out.detach(), grads, stats


def worker(rank, world, init_file, result_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    out, grads, stats = run_step(rank, world)
    outs = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(outs, out)
    dist.all_reduce(grads)  # the global loss is the sum of the ranks' losses
    if rank == 0:
        torch.save(dict(out=torch.cat(outs), grads=grads, stats=stats), result_file)
    dist.destroy_process_group()


def test_two_process_gloo_equals_one_process(tmp_path):
    result_file = str(tmp_path / 'result.pt')
    mp.spawn(worker, args=(2, str(tmp_path / 'init'), result_file), nprocs=2, join=True)
    distributed = torch.load(result_file)
    out, grads, stats = run_step(0, 1)
    assert torch.allclose(distributed['out'], out, rtol=1e-9, atol=1e-12)
    assert torch.allclose(distributed['grads'], grads, rtol=1e-7, atol=1e-10)
    assert torch.allclose(distributed['stats'], stats, rtol=1e-9, atol=1e-12)
