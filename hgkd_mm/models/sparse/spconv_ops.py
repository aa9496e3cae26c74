"""Real sparse convolution on the visible sites only ("spconv" backend).

spconv builds the rulebook (its hash-table pairing of input and output sites per
kernel offset); the convolution itself is a gather, a GEMM and a scatter-add per
offset in torch. spconv 2.3.8's own CPU kernel returns wrong values at random
(spconv#679, reproduced here), while its rulebook is deterministic, so only
the rulebook is taken from it. Weights stay in the dense ``nn.Conv2d`` (checkpoints
are plain ResNet checkpoints) and gradients reach them through autograd.
"""
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...utils.spconv_build import spconv_requirement


def install_hint() -> str:
    """How to install the spconv build that fits this torch."""
    try:
        install = f'`pip install {spconv_requirement(torch.version.cuda, torch.cuda.is_available())}`'
    except ValueError as error:  # no build for this CUDA
        install = str(error).split(';')[0]
    return (f"backend='spconv' needs the spconv package, which is not installed. For this "
            f'torch (CUDA {torch.version.cuda or "none"}, GPU '
            f'{"found" if torch.cuda.is_available() else "not found"}): '
            f"{install} (remove other spconv/cumm builds first); or use backend='masked', "
            'which gives the same results.')


def import_spconv():
    """``spconv.pytorch``, or an ImportError that says how to install it."""
    try:
        import spconv.pytorch as spconv
    except ImportError as e:
        raise ImportError(install_hint()) from e
    return spconv


class SpconvConv2d:
    """Applies a dense ``nn.Conv2d`` as a sparse convolution over visible sites.

    Stride-1 convolutions are submanifold (outputs only at visible sites). Strided
    ones are regular sparse convolutions whose outputs are re-masked to the coarser
    visible grid, which is what the masked backend computes.
    """

    def __init__(self):
        spconv = import_spconv()
        from spconv.core import ConvAlgo
        self.get_indice_pairs = spconv.ops.get_indice_pairs
        self.algo = ConvAlgo.Native

    def rulebook(self, conv: nn.Conv2d, indices: Tensor, batch: int,
                 size: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor, bool]:
        """spconv's pairs ``(2, K, N)``, their counts ``(K,)`` and the output sites."""
        if conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError('spconv backend supports groups=1, dilation=1 convolutions only')
        subm = conv.stride == (1, 1)
        out_indices, pairs, counts = self.get_indice_pairs(
            indices, batch, list(size), self.algo, list(conv.kernel_size), list(conv.stride),
            list(conv.padding), [1, 1], [0, 0], subm)
        return pairs.long(), counts.tolist(), (indices if subm else out_indices).long(), subm

    def __call__(self, conv: nn.Conv2d, x: Tensor, mask_in: Tensor, mask_out: Tensor) -> Tensor:
        """``x (B, C, H, W)`` visible where ``mask_in (B, 1, H, W)``; returns the conv output
        ``(B, C', H', W')`` masked by ``mask_out``."""
        batch, _, height, width = x.shape
        # spconv reads indices as a row-major (N, 3) buffer: nonzero() is column-major
        indices = mask_in[:, 0].nonzero().int().contiguous()  # (N, 3): batch, y, x
        features = x.permute(0, 2, 3, 1)[indices[:, 0].long(), indices[:, 1].long(),
                                         indices[:, 2].long()]
        pairs, counts, out_indices, subm = self.rulebook(conv, indices, batch, (height, width))
        kernels = conv.weight.flatten(2).permute(2, 1, 0)  # (K, C_in, C_out), row-major offsets
        # accumulate in float32 at least: under autocast the products come out in bf16
        dtype = torch.promote_types(features.dtype, torch.float32)
        out = features.new_zeros(out_indices.shape[0], conv.out_channels, dtype=dtype)
        num_offsets = kernels.shape[0]
        for k, count in enumerate(counts):
            if count == 0:
                continue
            src, dst = pairs[0, k, :count], pairs[1, k, :count]
            out = out.index_add(0, dst, (features[src] @ kernels[k]).to(dtype))
            if subm:  # spconv stores half of a submanifold rulebook: offset K-1-k mirrors k
                mirror = kernels[num_offsets - 1 - k]
                out = out.index_add(0, src, (features[dst] @ mirror).to(dtype))
        if subm and counts[num_offsets // 2] == 0:  # the centre offset maps every site to itself
            out = out + (features @ kernels[num_offsets // 2]).to(dtype)
        dense = out.new_zeros(batch, mask_out.shape[-2], mask_out.shape[-1], conv.out_channels)
        dense[out_indices[:, 0], out_indices[:, 1], out_indices[:, 2]] = out
        dense = dense.permute(0, 3, 1, 2)
        if conv.bias is not None:
            dense = dense + conv.bias.view(1, -1, 1, 1)
        return dense * mask_out
