"""Masked BatchNorm (+ ReLU) in Triton kernels: the eager fast path on a GPU.

The torch implementation (:mod:`.masked_ops`) reads or writes the full-size tensor 27
times per norm and ReLU, forward and backward (17 reads, 10 writes); these kernels 8 times
(6 reads, 2 writes):

- forward: one reduction (``sum(x m)``, ``sum((x m)^2)`` per channel) and one elementwise
  pass ``out = relu(x * scale + shift) * m``;
- backward: one reduction (``sum(g')``, ``sum(g' x)`` with ``g' = g * m * [pre-ReLU > 0]``)
  and one elementwise pass ``dx = (g' * gain + x * coef_x + coef_one) * m``.

Between them, one small kernel each way computes the per-channel terms from the partial
sums (statistics, scale and shift, the running statistics; the input-gradient
coefficients and the parameter gradients) with the formulas of :mod:`.norm_terms`: in
eager mode the torch ops for them are 35 tiny kernel launches per norm. With SyncBN
across processes the sums are all-reduced first, as in the torch implementation.

``x`` is the raw convolution output: its values at masked positions never matter. Used
for CUDA float16/bfloat16/float32 tensors in eager mode (under ``torch.compile`` the torch
implementation is traced and fused instead); the kernels also run on the CPU under
``TRITON_INTERPRET=1`` (tests).
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .norm_terms import distributed_sync

try:
    import triton
    import triton.language as tl
except ImportError:  # triton comes with CUDA builds of torch
    triton = None

BLOCK_ELEMENTS = 2048  # elements per program tile (channels x positions)
TARGET_PROGRAMS = 2048  # reductions split the positions until about this many programs


def triton_available() -> bool:
    return triton is not None


def usable_for(x: Tensor) -> bool:
    """Whether the kernels can run on ``x`` here (eager, CUDA or the interpreter)."""
    if torch.compiler.is_compiling() or triton is None:
        return False
    return (x.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and (x.is_cuda or os.environ.get('TRITON_INTERPRET') == '1'))


if triton is not None:

    @triton.jit
    def _sums_kernel(x_ptr, g_ptr, m_ptr, scale_ptr, shift_ptr, out_ptr, C, HW,
                     stride_b, stride_c, stride_s, tiles_per_split,
                     GRAD: tl.constexpr, RELU: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
        """Per (sample, split of the positions, channel): ``sum(x m), sum((x m)^2)`` or,
        with ``GRAD``, ``sum(g'), sum(g' x)``; into ``out (2, B * splits, C)``."""
        pid_c, b, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        in_c = channels < C
        if GRAD and RELU:
            scale = tl.load(scale_ptr + channels, mask=in_c, other=0.)[:, None]
            shift = tl.load(shift_ptr + channels, mask=in_c, other=0.)[:, None]
        first = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
        second = tl.zeros([BLOCK_C, BLOCK_S], tl.float32)
        first_tile = split * tiles_per_split
        for tile in range(first_tile, first_tile + tiles_per_split):
            positions = tile * BLOCK_S + tl.arange(0, BLOCK_S)
            in_s = positions < HW
            m = tl.load(m_ptr + b * HW + positions, mask=in_s, other=0.).to(tl.float32)
            offsets = (b * stride_b + channels[:, None] * stride_c
                       + positions[None, :] * stride_s)
            valid = in_c[:, None] & in_s[None, :]
            x = tl.load(x_ptr + offsets, mask=valid, other=0.).to(tl.float32)
            if GRAD:
                g = tl.load(g_ptr + offsets, mask=valid, other=0.).to(tl.float32) * m[None, :]
                if RELU:
                    g = tl.where(x * scale + shift > 0, g, 0.)
                first += g
                second += g * x
            else:
                xm = x * m[None, :]
                first += xm
                second += xm * xm
        row = b * tl.num_programs(2) + split
        out = row * C + channels
        tl.store(out_ptr + out, tl.sum(first, axis=1), mask=in_c)
        rows = tl.num_programs(1) * tl.num_programs(2)
        tl.store(out_ptr + rows * C + out, tl.sum(second, axis=1), mask=in_c)

    @triton.jit
    def _elementwise_kernel(x_ptr, g_ptr, m_ptr, scale_ptr, shift_ptr, gain_ptr, coef_x_ptr,
                            coef_one_ptr, out_ptr, C, HW, stride_b, stride_c, stride_s,
                            GRAD: tl.constexpr, RELU: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
        """``out = relu(x * scale + shift) * m``, or with ``GRAD`` the input gradient
        ``(g' * gain + x * coef_x + coef_one) * m``."""
        pid_c, b, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        positions = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        in_c, in_s = channels < C, positions < HW
        valid = in_c[:, None] & in_s[None, :]
        offsets = b * stride_b + channels[:, None] * stride_c + positions[None, :] * stride_s
        m = tl.load(m_ptr + b * HW + positions, mask=in_s, other=0.).to(tl.float32)[None, :]
        x = tl.load(x_ptr + offsets, mask=valid, other=0.).to(tl.float32)
        scale = tl.load(scale_ptr + channels, mask=in_c, other=0.)[:, None]
        shift = tl.load(shift_ptr + channels, mask=in_c, other=0.)[:, None]
        pre = x * scale + shift
        if GRAD:
            g = tl.load(g_ptr + offsets, mask=valid, other=0.).to(tl.float32)
            if RELU:
                g = tl.where(pre > 0, g, 0.)
            gain = tl.load(gain_ptr + channels, mask=in_c, other=0.)[:, None]
            coef_x = tl.load(coef_x_ptr + channels, mask=in_c, other=0.)[:, None]
            coef_one = tl.load(coef_one_ptr + channels, mask=in_c, other=0.)[:, None]
            result = (g * gain + x * coef_x + coef_one) * m
        else:
            result = tl.maximum(pre, 0.) * m if RELU else pre * m
        tl.store(out_ptr + offsets, result.to(out_ptr.dtype.element_ty), mask=valid)

    @triton.jit
    def _row_sums(ptr, rows, C, channels, in_c, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        """Sums over the rows of the partial sums ``(2, rows, C)`` at ``channels``."""
        first = tl.zeros([BLOCK_C], tl.float32)
        second = tl.zeros([BLOCK_C], tl.float32)
        for start in range(0, rows, BLOCK_R):
            r = start + tl.arange(0, BLOCK_R)
            offsets = r[:, None] * C + channels[None, :]
            valid = (r < rows)[:, None] & in_c[None, :]
            first += tl.sum(tl.load(ptr + offsets, mask=valid, other=0.), axis=0)
            second += tl.sum(tl.load(ptr + rows * C + offsets, mask=valid, other=0.), axis=0)
        return first, second

    @triton.jit
    def _forward_terms_kernel(partial_ptr, rows, count_ptr, weight_ptr, bias_ptr, eps, C,
                              mean_ptr, var_ptr, invstd_ptr, scale_ptr, shift_ptr,
                              running_mean_ptr, running_var_ptr, momentum,
                              AFFINE: tl.constexpr, UPDATE: tl.constexpr,
                              BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr):
        """From the partial sums ``(2, rows, C)`` of ``x m`` and ``(x m)^2``: ``mean, var,
        invstd, scale, shift`` per channel (``stats_from_sums`` and ``scale_shift``); with
        ``UPDATE`` also the running statistics, as ``MaskedBatchNorm2d`` updates them."""
        channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        in_c = channels < C
        total, squares = _row_sums(partial_ptr, rows, C, channels, in_c, BLOCK_C, BLOCK_R)
        count = tl.load(count_ptr)
        mean = total / count
        var = tl.maximum(squares / count - mean * mean, 0.)
        invstd = 1. / tl.sqrt(var + eps)
        scale = invstd
        if AFFINE:
            scale = invstd * tl.load(weight_ptr + channels, mask=in_c, other=0.).to(tl.float32)
            shift = (tl.load(bias_ptr + channels, mask=in_c, other=0.).to(tl.float32)
                     - mean * scale)
        else:
            shift = -mean * scale
        tl.store(mean_ptr + channels, mean, mask=in_c)
        tl.store(var_ptr + channels, var, mask=in_c)
        tl.store(invstd_ptr + channels, invstd, mask=in_c)
        tl.store(scale_ptr + channels, scale, mask=in_c)
        tl.store(shift_ptr + channels, shift, mask=in_c)
        if UPDATE:  # lerp towards the batch statistics, the variance unbiased
            unbiased = var * count / tl.maximum(count - 1., 1.)
            running_mean = tl.load(running_mean_ptr + channels, mask=in_c).to(tl.float32)
            running_var = tl.load(running_var_ptr + channels, mask=in_c).to(tl.float32)
            tl.store(running_mean_ptr + channels,
                     running_mean + momentum * (mean - running_mean), mask=in_c)
            tl.store(running_var_ptr + channels,
                     running_var + momentum * (unbiased - running_var), mask=in_c)

    @triton.jit
    def _backward_terms_kernel(total_ptr, total_rows, local_ptr, local_rows, mean_ptr,
                               invstd_ptr, weight_ptr, count_ptr, C, gain_ptr, coef_x_ptr,
                               coef_one_ptr, grad_weight_ptr, grad_bias_ptr,
                               AFFINE: tl.constexpr, BLOCK_C: tl.constexpr,
                               BLOCK_R: tl.constexpr):
        """From the partial sums ``(2, rows, C)`` of ``g'`` and ``g' x`` over all processes
        (``total``) and this one (``local``): ``gain, coef_x, coef_one`` and, with
        ``AFFINE``, the parameter gradients (``backward_terms``)."""
        channels = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        in_c = channels < C
        sum_g, sum_gx = _row_sums(total_ptr, total_rows, C, channels, in_c, BLOCK_C, BLOCK_R)
        mean = tl.load(mean_ptr + channels, mask=in_c, other=0.)
        invstd = tl.load(invstd_ptr + channels, mask=in_c, other=0.)
        count = tl.load(count_ptr)
        gain = invstd
        if AFFINE:
            gain = invstd * tl.load(weight_ptr + channels, mask=in_c, other=0.).to(tl.float32)
        coef_x = -gain * invstd * invstd * (sum_gx - mean * sum_g) / count
        coef_one = -gain * sum_g / count - coef_x * mean
        tl.store(gain_ptr + channels, gain, mask=in_c)
        tl.store(coef_x_ptr + channels, coef_x, mask=in_c)
        tl.store(coef_one_ptr + channels, coef_one, mask=in_c)
        if AFFINE:  # the parameter gradients from this process's sums (DDP sums them)
            local_g, local_gx = _row_sums(local_ptr, local_rows, C, channels, in_c, BLOCK_C,
                                          BLOCK_R)
            tl.store(grad_weight_ptr + channels, invstd * (local_gx - mean * local_g),
                     mask=in_c)
            tl.store(grad_bias_ptr + channels, local_g, mask=in_c)


def _layout(x: Tensor):
    """``x`` in its own dense layout (NCHW or channels-last) and its strides as
    ``(batch, channel, position)`` over the flattened ``H * W`` positions."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    stride_b, stride_c, _, stride_w = x.stride()
    return x, fmt, (stride_b, stride_c, stride_w)


def _blocks(channels: int, positions: int, strides):
    """Tile ``(BLOCK_C, BLOCK_S)``: long along the contiguous axis (positions for NCHW,
    channels for channels-last)."""
    if strides[1] == 1 and channels > 1:  # channels-last
        block_c = min(triton.next_power_of_2(channels), 512)
        block_s = min(triton.next_power_of_2(positions), max(1, BLOCK_ELEMENTS // block_c))
    else:
        block_s = min(triton.next_power_of_2(positions), 512)
        block_c = min(triton.next_power_of_2(channels), max(1, BLOCK_ELEMENTS // block_s))
    return block_c, block_s


def _partial_sums(x: Tensor, g: Optional[Tensor], m: Tensor, strides, relu: bool,
                  scale: Optional[Tensor] = None, shift: Optional[Tensor] = None) -> Tensor:
    """``(2, rows, C)`` float32 per-channel sums, one row per sample and split of its
    positions (see ``_sums_kernel``)."""
    batch, channels, height, width = x.shape
    block_c, block_s = _blocks(channels, height * width, strides)
    channel_blocks, tiles = triton.cdiv(channels, block_c), triton.cdiv(height * width, block_s)
    # split the positions of a sample when channel blocks x samples give too few programs
    splits = min(tiles, triton.cdiv(TARGET_PROGRAMS, channel_blocks * batch))
    tiles_per_split = triton.cdiv(tiles, splits)
    splits = triton.cdiv(tiles, tiles_per_split)
    partial = x.new_empty(2, batch * splits, channels, dtype=torch.float32)
    grad = g is not None
    _sums_kernel[(channel_blocks, batch, splits)](
        x, g if grad else x, m, scale if grad and relu else partial,
        shift if grad and relu else partial, partial, channels, height * width, *strides,
        tiles_per_split, GRAD=grad, RELU=relu, BLOCK_C=block_c, BLOCK_S=block_s)
    return partial


def _terms_grid(channels: int):
    block_c = min(triton.next_power_of_2(channels), 128)
    return (triton.cdiv(channels, block_c), ), dict(BLOCK_C=block_c, BLOCK_R=16)


def _all_reduced(partial: Tensor, count: Optional[Tensor], sync: bool):
    """The sums over every process for SyncBN (one row), else ``partial`` as it is."""
    if not distributed_sync(sync):
        return partial, count
    sums = partial.sum(dim=1, keepdim=True)
    if count is None:
        dist.all_reduce(sums)
        return sums, None
    stats = torch.cat([sums.flatten(), count])
    dist.all_reduce(stats)
    return stats[:-1].view(sums.shape), stats[-1:]


def _forward_terms(partial: Tensor, count: Tensor, weight: Optional[Tensor],
                   bias: Optional[Tensor], eps: float, running: Optional[tuple]):
    """``mean, var, invstd, scale, shift`` (float32, ``(C,)``) from the partial sums;
    ``running``: ``(running_mean, running_var, momentum)`` to update, or ``None``."""
    channels = partial.shape[-1]
    terms = [partial.new_empty(channels) for _ in range(5)]
    grid, blocks = _terms_grid(channels)
    affine = weight is not None
    running_mean, running_var, momentum = running or (count, count, 0.)
    _forward_terms_kernel[grid](partial, partial.shape[1], count, weight if affine else count,
                                bias if affine else count, eps, channels, *terms,
                                running_mean, running_var, float(momentum), AFFINE=affine,
                                UPDATE=running is not None, **blocks)
    return terms


def _backward_terms(total: Tensor, local: Tensor, mean: Tensor, invstd: Tensor,
                    weight: Optional[Tensor], count: Tensor):
    """``gain, coef_x, coef_one`` and the parameter gradients (``None`` without
    ``weight``) from the partial sums of all processes (``total``) and this one."""
    channels = local.shape[-1]
    affine = weight is not None
    terms = [local.new_empty(channels) for _ in range(5)]  # the last two with weight only
    grid, blocks = _terms_grid(channels)
    _backward_terms_kernel[grid](total, total.shape[1], local, local.shape[1], mean, invstd,
                                 weight if affine else mean, count, channels, *terms,
                                 AFFINE=affine, **blocks)
    gain, coef_x, coef_one = terms[:3]
    if not affine:
        return gain, coef_x, coef_one, (None, None)
    return gain, coef_x, coef_one, tuple(t.to(weight.dtype) for t in terms[3:])


def _elementwise(x: Tensor, g: Optional[Tensor], m: Tensor, strides, fmt, relu: bool,
                 scale: Tensor, shift: Tensor, gain: Optional[Tensor] = None,
                 coef_x: Optional[Tensor] = None, coef_one: Optional[Tensor] = None) -> Tensor:
    batch, channels, height, width = x.shape
    block_c, block_s = _blocks(channels, height * width, strides)
    out = torch.empty_like(x, memory_format=fmt)
    grad = g is not None
    grid = (triton.cdiv(channels, block_c), batch, triton.cdiv(height * width, block_s))
    _elementwise_kernel[grid](
        x, g if grad else x, m, scale, shift, gain if grad else scale,
        coef_x if grad else scale, coef_one if grad else scale, out, channels, height * width,
        *strides, GRAD=grad, RELU=relu, BLOCK_C=block_c, BLOCK_S=block_s)
    return out


class TritonMaskedBatchNormTrain(torch.autograd.Function):
    """``_MaskedBatchNormTrain`` (batch statistics) with an optional fused ReLU, in
    Triton kernels. Same arguments and outputs, plus ``relu`` and ``running``:
    ``(running_mean, running_var, momentum)`` to update in the same kernel, or ``None``."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                eps: float, sync: bool, relu: bool, running: Optional[tuple] = None):
        x, fmt, strides = _layout(x)
        m = mask.reshape(mask.shape[0], -1).contiguous()  # (B, H * W)
        count = torch.sum(m, dtype=torch.float32).reshape(1)
        partial, count = _all_reduced(_partial_sums(x, None, m, strides, relu), count, sync)
        mean, var, invstd, scale, shift = _forward_terms(partial, count, weight, bias, eps,
                                                         running)
        out = _elementwise(x, None, m, strides, fmt, relu, scale, shift)
        ctx.save_for_backward(x, m, weight, mean, invstd, count, scale, shift)
        ctx.sync, ctx.relu, ctx.fmt, ctx.strides = sync, relu, fmt, strides
        ctx.mark_non_differentiable(mean, var, count)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for mean, var, count
        return out, mean, var, count

    @staticmethod
    def backward(ctx, grad_out: Tensor, *_):
        x, m, weight, mean, invstd, count, scale, shift = ctx.saved_tensors
        g = grad_out.contiguous(memory_format=ctx.fmt)
        local = _partial_sums(x, g, m, ctx.strides, ctx.relu, scale, shift)
        total, _ = _all_reduced(local, None, ctx.sync)  # the input gradient's global sums
        gain, coef_x, coef_one, param_grads = _backward_terms(total, local, mean, invstd,
                                                              weight, count)
        grad_x = _elementwise(x, g, m, ctx.strides, ctx.fmt, ctx.relu, scale, shift, gain,
                              coef_x, coef_one)
        return (grad_x, None) + param_grads + (None, None, None, None)
