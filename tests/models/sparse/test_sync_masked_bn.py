"""Masked SyncBN: a 2-process gloo run equals a 1-process run with the same global batch
(both backends: the packed one normalises its tiles with the norms' mask-free path)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hgkd_mm.models.backbones import HGKDSparseResNet
from helpers import random_mask

BATCH = 4


def make_problem(backend: str):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, 3, 64, 64, generator=g, dtype=torch.float64)
    if backend == 'packed':  # two visible cells in every sample
        mask = random_mask(BATCH, 2, 2, keep=2, seed=1)
    else:
        mask = torch.rand(BATCH, 2, 2, generator=g) > 0.4
        mask[:, 0, 0] = True
    weights = torch.randn(BATCH, 512, 2, 2, generator=g, dtype=torch.float64)
    return inputs, mask, weights


def run_step(rank: int, world: int, backend: str):
    torch.manual_seed(0)
    model = HGKDSparseResNet(18, backend=backend,
                             norm_cfg=dict(type='MaskedSyncBatchNorm2d')).double()
    model.train()
    inputs, mask, weights = make_problem(backend)
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    out = model(inputs[part], mask[part])[-1]
    (out * weights[part]).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    stats = torch.cat([b.flatten().double() for n, b in model.named_buffers() if 'running' in n])
    return out.detach(), grads, stats


def worker(rank, world, init_file, result_file, backend):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    out, grads, stats = run_step(rank, world, backend)
    outs = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(outs, out)
    dist.all_reduce(grads)  # the global loss is the sum of the ranks' losses
    if rank == 0:
        torch.save(dict(out=torch.cat(outs), grads=grads, stats=stats), result_file)
    dist.destroy_process_group()


@pytest.mark.parametrize('backend', ['masked', 'packed'])
def test_two_process_gloo_equals_one_process(tmp_path, backend):
    result_file = str(tmp_path / 'result.pt')
    mp.spawn(worker, args=(2, str(tmp_path / 'init'), result_file, backend), nprocs=2,
             join=True)
    distributed = torch.load(result_file)
    out, grads, stats = run_step(0, 1, backend)
    assert torch.allclose(distributed['out'], out, rtol=1e-9, atol=1e-12)
    assert torch.allclose(distributed['grads'], grads, rtol=1e-7, atol=1e-10)
    assert torch.allclose(distributed['stats'], stats, rtol=1e-9, atol=1e-12)


def norm_step(impl: str, rank: int, world: int):
    """One MaskedSyncBatchNorm2d + ReLU, forward and backward, on this rank's part of a
    float32 batch: output, input gradient, parameter gradients, running statistics."""
    from hgkd_mm.models.sparse import MaskedSyncBatchNorm2d, MaskPyramid
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 16, 8, 8, generator=g) * 2 + 0.5
    upstream = torch.randn(BATCH, 16, 8, 8, generator=g)
    grid = torch.rand(BATCH, 2, 2, generator=g) > 0.5
    grid[:, 0, 0] = True
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    norm = MaskedSyncBatchNorm2d(16)
    norm.impl = impl
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 16))
        norm.bias.copy_(torch.linspace(-1, 1, 16))
    x = x[part].clone().requires_grad_()
    out = norm(x, MaskPyramid(grid[part]).of_size((8, 8), torch.float32), relu=True)
    torch.autograd.backward(out, upstream[part])
    return out.detach(), x.grad, torch.cat([norm.weight.grad, norm.bias.grad]), torch.cat(
        [norm.running_mean, norm.running_var])


def triton_worker(rank, world, init_file, result_file):
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                            world_size=world)
    torch.set_num_threads(1)
    from hgkd_mm.models.sparse import triton_norm
    assert triton_norm.usable_for(torch.zeros(1))  # the kernels, in Triton's interpreter
    out, grad_x, param_grads, stats = norm_step('triton', rank, world)
    gathered = [[torch.empty_like(t) for _ in range(world)] for t in (out, grad_x)]
    dist.all_gather(gathered[0], out)
    dist.all_gather(gathered[1], grad_x)
    dist.all_reduce(param_grads)  # as DDP does
    if rank == 0:
        torch.save(dict(out=torch.cat(gathered[0]), grad_x=torch.cat(gathered[1]),
                        param_grads=param_grads, stats=stats), result_file)
    dist.destroy_process_group()


def test_triton_sync_norm_two_processes_equal_one(tmp_path, monkeypatch):
    """norm_impl='triton' all-reduces its partial sums: 2 gloo processes (kernels in Triton's
    interpreter) give the torch norm's numbers on the whole batch in one process."""
    pytest.importorskip('triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')  # read by triton when the workers import it
    result_file = str(tmp_path / 'result.pt')
    mp.spawn(triton_worker, args=(2, str(tmp_path / 'init'), result_file), nprocs=2, join=True)
    distributed = torch.load(result_file)
    for name, expected in zip(('out', 'grad_x', 'param_grads', 'stats'), norm_step('torch', 0, 1)):
        torch.testing.assert_close(distributed[name], expected, rtol=1e-5, atol=1e-5, msg=name)
