"""What one training step does: torch.profiler's op table and totals, and an ATen op counter
(ops, per-channel ops, memory traffic)."""
from __future__ import annotations

import collections
import os
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# CUDA runtime/driver calls that start GPU work (a CUDA graph counts once)
LAUNCH_EVENTS = ('cudaLaunchKernel', 'cuLaunchKernel', 'cudaGraphLaunch')


def profile_steps(run: Callable[[], None], device: torch.device, path: str, steps: int = 3,
                  top: int = 30) -> dict:
    """Profile ``steps`` calls of ``run`` (a training step); write torch.profiler's op
    table (by own device time on CUDA, own CPU time on the CPU) to ``path`` and return the
    top ``top`` ops, the totals per step (on CUDA the device time is the GPU's busy time)
    and, on CUDA, the kernel launches per step."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            run()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    key = 'self_device_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    averages = prof.key_averages()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(averages.table(sort_by=key, row_limit=80))
    totals = profile_totals(averages, device.type == 'cuda')

    def rows(events):
        return [dict(name=e.key, calls_per_step=e.count / steps,
                     ms_per_step=getattr(e, key) / 1000 / steps) for e in events[:top]]

    ops, kernels = totals.pop('ops'), totals.pop('kernels', None)
    result = dict(steps=steps, sort_by=key, table=path,
                  **{name: value / steps for name, value in totals.items()}, top=rows(ops))
    if kernels is not None:
        result['top_kernels'] = rows(kernels)
    return result


def profile_totals(events, cuda: bool) -> dict:
    """Per-profile totals of torch.profiler's ``key_averages()`` rows. On CUDA a kernel's
    time is listed in its own row and again as the self device time of the op that
    launched it, and user annotations (the optimizer step, compiled graphs) span others:
    as torch's own table, the GPU's busy time sums the kernel rows only. ``ops``: the CPU
    op rows, ``kernels`` (CUDA): the kernel rows, both by time, longest first."""
    from torch.autograd import DeviceType
    ops = [e for e in events
           if e.device_type == DeviceType.CPU and not (cuda and e.is_user_annotation)]
    key = 'self_device_time_total' if cuda else 'self_cpu_time_total'
    cpu_ms = sum(e.self_cpu_time_total for e in ops) / 1000
    result = dict(ops=sorted(ops, key=lambda e: getattr(e, key), reverse=True),
                  cpu_ms_per_step=cpu_ms, total_ms_per_step=cpu_ms)  # on CUDA: below
    if not cuda:
        return result
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    result['kernels'] = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)
    result['total_ms_per_step'] = sum(e.self_device_time_total for e in kernels) / 1000
    result['kernel_launches_per_step'] = sum(
        e.count for e in ops if e.key.startswith(LAUNCH_EVENTS))
    return result



# ops that only make views or allocate: not counted
VIEWS = {'view', '_unsafe_view', 'expand', 'permute', 'transpose', 't', 'slice', 'select',
         'unsqueeze', 'squeeze', 'as_strided', 'detach', 'alias', 'split', 'unbind',
         'split_with_sizes', 'empty', 'empty_like', 'empty_strided', 'new_empty', 'lift_fresh'}
MATMUL = ('convolution', 'convolution_backward', 'mm', 'bmm', 'addmm', 'linear', 'matmul',
          '_scaled_dot_product', 'mkldnn')
PER_CHANNEL_MAX = 4096


class CountOps(TorchDispatchMode):
    """ATen ops by name (views not counted); per-channel ops (whose largest tensor has at
    most ``PER_CHANNEL_MAX`` values); bytes read + written by the ops other than
    convolutions and matrix products."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.per_channel = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in VIEWS:
            return out
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        self.ops[name] += 1
        self.per_channel += max((t.numel() for t in tensors), default=0) <= PER_CHANNEL_MAX
        if not name.startswith(MATMUL):  # an expanded tensor is read at its storage size
            self.bytes += sum(min(t.numel() * t.element_size(), t.untyped_storage().nbytes())
                              for t in tensors)
        return out


def count_ops(step: Callable[[], None]) -> CountOps:
    """The ops of the second run of ``step`` (the first may set things up)."""
    step()
    with CountOps() as record:
        step()
    return record
