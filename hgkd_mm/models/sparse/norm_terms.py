"""Per-channel terms shared by the masked BatchNorm implementations (torch and Triton):
statistics from masked sums and the backward coefficients, with the SyncBN all-reduce."""
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor


def distributed_sync(sync: bool) -> bool:
    """Whether a SyncBN (``sync``) has other processes to all-reduce with."""
    return sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def stats_from_sums(total: Tensor, squares: Tensor, count: Tensor, sync: bool):
    """Mean and biased variance per channel (and the count) from the per-channel sum and
    sum of squares of the visible values and their count (1 element), all-reduced first
    when ``sync``: the three sums are all that crosses processes for SyncBN."""
    if distributed_sync(sync):
        stats = torch.cat([total, squares, count])
        # differentiable all-reduce: the backward pass sums the gradients of all ranks
        stats = torch.distributed.nn.functional.all_reduce(stats)
        total, squares, count = stats.split([total.numel(), squares.numel(), 1])
    mean = total / count
    var = (squares / count - mean.square()).clamp_min(0)
    return mean, var, count


def scale_shift(mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
                bias: Optional[Tensor], dtype: torch.dtype):
    """``out = x * scale + shift``, both ``(1, C, 1, 1)`` in ``dtype``."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    shape = (1, -1, 1, 1)
    return scale.to(dtype).view(shape), shift.to(dtype).view(shape)


def backward_terms(local: Tensor, mean: Tensor, invstd: Tensor, weight: Optional[Tensor],
                   count: Tensor, sync: bool):
    """Per-channel terms of the masked BatchNorm backward.

    Args:
        local (Tensor): ``(2, C)``: this process's ``sum(g)`` and ``sum(g * x)`` over visible
            positions (``g`` the gradient of the norm's output).

    Returns:
        tuple: ``gain``, ``coef_x``, ``coef_one`` with ``dx = g * gain + x * coef_x +
        coef_one`` at visible positions, and the gradients of ``weight`` and ``bias``
        (``None, None`` without them).
    """
    total = local
    if distributed_sync(sync):  # the input gradient needs the global sums
        total = local.clone()
        dist.all_reduce(total)
    sum_g, sum_gx = total
    gain = invstd if weight is None else invstd * weight
    # at visible positions dx = gain * (g - sum(g) / n - xhat * sum(g * xhat) / n)
    coef_x = -gain * invstd.square() * (sum_gx - mean * sum_g) / count
    coef_one = -gain * sum_g / count - coef_x * mean
    if weight is None:
        return gain, coef_x, coef_one, (None, None)
    local_sum_g, local_sum_gx = local  # DDP sums the parameter gradients
    grad_weight = invstd * (local_sum_gx - mean * local_sum_g)
    return gain, coef_x, coef_one, (grad_weight.to(weight.dtype), local_sum_g.to(weight.dtype))
