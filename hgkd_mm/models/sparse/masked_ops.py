"""Submanifold-sparse operations on dense tensors ("masked" backend).

A sparse feature map is stored densely as ``(B, C, H, W)`` with zeros at masked
positions, next to its visibility mask ``(B, 1, H, W)`` (1 = visible). The mask is
always an argument: no module or class keeps mask state, so a model works for
inference right after it is built.
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmpretrain.registry import MODELS

from . import triton_norm
from .norm_terms import backward_terms, distributed_sync, scale_shift, stats_from_sums


class MaskPyramid:
    """The stride-32 visibility mask, expanded on demand to any feature resolution.

    Args:
        mask_grid (Tensor): ``(B, h, w)`` bool, True = visible.
    """

    def __init__(self, mask_grid: Tensor):
        if mask_grid.dim() != 3 or mask_grid.dtype != torch.bool:
            raise ValueError('mask must be a bool tensor of shape (B, H/32, W/32), '
                             f'got {tuple(mask_grid.shape)} {mask_grid.dtype}')
        self.mask_grid = mask_grid
        self._cache: Dict[tuple, Tensor] = {}

    def at(self, feature: Tensor) -> Tensor:
        """The mask ``(B, 1, H, W)`` in ``feature``'s dtype for its resolution."""
        return self.of_size(tuple(feature.shape[-2:]), feature.dtype)

    def of_size(self, size: tuple, dtype: torch.dtype) -> Tensor:
        """The mask ``(B, 1, *size)`` in ``dtype``."""
        key = (size, dtype)
        if key not in self._cache:
            h, w = self.mask_grid.shape[-2:]
            if size[0] % h or size[1] % w:
                raise ValueError(f'feature size {size} is not a multiple of the mask grid {(h, w)}')
            grid = self.mask_grid[:, None].to(dtype)
            self._cache[key] = F.interpolate(grid, size=size, mode='nearest')
        return self._cache[key]


def masked_bn_stats(x: Tensor, mask: Optional[Tensor], sync: bool):
    """Mean and biased variance per channel over visible positions (all positions
    when ``mask`` is None).

    Needs ``x`` to be zero at masked positions. Three sums (sum, sum of squares,
    count) are all that crosses processes for SyncBN, in one all-reduce.

    Returns:
        tuple: ``mean (C,)``, ``var (C,)`` in float32 (float64 for float64 input),
        and the visible count (a 1-element tensor).
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    total = torch.sum(x, dim=(0, 2, 3), dtype=acc)
    squares = torch.linalg.vector_norm(x, 2, dim=(0, 2, 3), dtype=acc).square()
    if mask is None:
        count = x.new_full((1, ), x.numel() // x.shape[1], dtype=acc)
    else:
        count = torch.sum(mask, dtype=acc).reshape(1)
    return stats_from_sums(total, squares, count, sync)


class _MaskedBatchNormTrain(torch.autograd.Function):
    """Masked BatchNorm with batch statistics, with a hand-written backward.

    Autograd through the masked sums ran about a dozen full-size elementwise ops in the
    backward; this backward runs seven (two products summed per channel, three
    multiply-adds), which halves the norm's forward + backward time on the CPU.

    Forward: ``x (B, C, H, W)`` (any values where ``mask (B, 1, H, W)`` is 0: the mask is
    applied here, so a sparse conv before the norm can skip its own mask multiply and its
    backward; None: all positions are visible). Returns the output and, not
    differentiable, ``mean``, ``var`` and ``count`` (for the running statistics).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Optional[Tensor], weight: Optional[Tensor],
                bias: Optional[Tensor], eps: float, sync: bool):
        if mask is not None:
            x = x * mask
        mean, var, count = masked_bn_stats(x, mask, sync)
        invstd = torch.rsqrt(var + eps)
        scale, shift = scale_shift(mean, invstd, weight, bias, x.dtype)
        out = torch.addcmul(shift, x, scale)
        if mask is not None:
            out.mul_(mask)
        ctx.save_for_backward(x, mask, weight, mean, invstd, count)
        ctx.sync = sync
        ctx.mark_non_differentiable(mean, var, count)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for mean, var, count
        return out, mean, var, count

    @staticmethod
    def backward(ctx, grad_out: Tensor, *_):
        x, mask, weight, mean, invstd, count = ctx.saved_tensors
        acc = mean.dtype
        # x is zero where masked: sum(g * x) needs no mask, the sum of g does
        visible_grad = grad_out if mask is None else grad_out * mask
        local = torch.stack([torch.sum(visible_grad, dim=(0, 2, 3), dtype=acc),
                             torch.sum(grad_out * x, dim=(0, 2, 3), dtype=acc)])
        gain, coef_x, coef_one, param_grads = backward_terms(local, mean, invstd, weight, count,
                                                             ctx.sync)
        shape = (1, -1, 1, 1)
        grad_x = torch.addcmul(coef_one.to(x.dtype).view(shape), grad_out,
                               gain.to(x.dtype).view(shape))
        if mask is not None:
            grad_x.mul_(mask)
        grad_x.addcmul_(x, coef_x.to(x.dtype).view(shape))
        return (grad_x, None) + param_grads + (None, None)


@MODELS.register_module()
class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over visible positions only; zero output at masked positions.

    Same parameters and buffers as ``nn.BatchNorm2d`` so weights move between
    sparse and dense models by name. Statistics come from masked sums (no
    boolean indexing, no host synchronisation); running variance is unbiased as
    in ``nn.BatchNorm``.

    Forward: ``x (B, C, H, W)``, ``mask (B, 1, H, W)``; the values of ``x`` at masked
    positions do not matter (they are zeroed here, also in the gradient). ``relu=True``
    applies a ReLU to the output (fused into the kernels with ``impl='triton'``). Without
    a mask every position is visible (the ``packed`` backend's tiles): ``nn.BatchNorm2d``,
    except that :class:`MaskedSyncBatchNorm2d` all-reduces its sums when training with
    other processes.

    Attributes:
        impl (str): ``'torch'`` (default) or ``'triton'``: the training-mode statistics,
            normalisation and backward in Triton kernels (:mod:`.triton_norm`) on CUDA in
            eager mode; elsewhere (CPU, float64, under ``torch.compile``) the torch ops.
    """
    sync = False
    impl = 'torch'

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, relu: bool = False) -> Tensor:
        if mask is None and not (self.training and distributed_sync(self.sync)):
            out = super().forward(x)  # every position is visible
            return F.relu(out, inplace=True) if relu else out
        weight, bias = (self.weight, self.bias) if self.affine else (None, None)
        if self.training or not self.track_running_stats:
            update = self.training and self.track_running_stats
            if self.impl == 'triton' and mask is not None and triton_norm.usable_for(x):
                # the kernels update the running statistics too (not with momentum=None:
                # its cumulative average reads the batch count on the host)
                running = ((self.running_mean, self.running_var, self.momentum)
                           if update and self.momentum is not None else None)
                out, mean, var, count = triton_norm.TritonMaskedBatchNormTrain.apply(
                    x, mask, weight, bias, self.eps, self.sync, relu, running)
                relu = False  # done
            else:
                running = None
                out, mean, var, count = _MaskedBatchNormTrain.apply(x, mask, weight, bias,
                                                                    self.eps, self.sync)
            if update:
                self._update_running_stats(mean, var, count, buffers_done=running is not None)
        else:
            invstd = torch.rsqrt(self.running_var + self.eps)
            scale, shift = scale_shift(self.running_mean, invstd, weight, bias, x.dtype)
            out = torch.addcmul(shift, x, scale) * mask
        return F.relu(out) if relu else out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor,
                              buffers_done: bool = False) -> None:
        self.num_batches_tracked.add_(1)
        if buffers_done:  # running mean and variance updated by the Triton kernels
            return
        if self.momentum is None:
            momentum = 1.0 / self.num_batches_tracked.item()
        else:
            momentum = self.momentum
        unbiased = var * count / (count - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


@MODELS.register_module()
class MaskedSyncBatchNorm2d(MaskedBatchNorm2d):
    """:class:`MaskedBatchNorm2d` whose statistics are all-reduced over the default
    process group (sum, sum of squares, count), so it works on any backend, gloo too."""
    sync = True


NORM_IMPLS = ('torch', 'triton')


def to_masked_norm(bn: nn.BatchNorm2d, sync: bool, impl: str = 'torch') -> MaskedBatchNorm2d:
    """A masked copy of ``bn`` with its parameters and buffers; ``impl`` as
    :attr:`MaskedBatchNorm2d.impl`."""
    if impl not in NORM_IMPLS:
        raise ValueError(f'norm_impl must be one of {NORM_IMPLS}, got {impl!r}')
    if impl == 'triton' and not triton_norm.triton_available():
        raise ImportError("norm_impl='triton' needs the triton package (it comes with CUDA "
                          "builds of torch); use norm_impl='torch'")
    cls = MaskedSyncBatchNorm2d if sync else MaskedBatchNorm2d
    masked = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    masked.impl = impl
    masked.load_state_dict(bn.state_dict())
    return masked.to(next(iter(bn.state_dict().values())).device)
