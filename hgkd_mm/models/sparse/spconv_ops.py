"""Real sparse convolution through spconv ("spconv" backend).

Weights stay in the dense ``nn.Conv2d`` (so checkpoints are plain ResNet
checkpoints); each call hands them to a parameter-free spconv module with
``torch.func.functional_call``, so gradients reach the dense weight.
"""
from typing import Dict

import torch
import torch.nn as nn
from torch import Tensor
from torch.func import functional_call

SPCONV_INSTALL_HINT = (
    "backend='spconv' needs the spconv package, which is not installed. Install the build "
    'that matches your torch: `pip install spconv==2.3.8` for CPU-only use, or '
    '`pip install spconv-cu120==2.3.8` (CUDA 12.0-12.5) / `spconv-cu126==2.3.8` (CUDA 12.6+) '
    "on a GPU; or use backend='masked', which gives the same results.")


def import_spconv():
    """``spconv.pytorch``, or an ImportError that says how to install it."""
    try:
        import spconv.pytorch as spconv
    except ImportError as e:
        raise ImportError(SPCONV_INSTALL_HINT) from e
    return spconv


def dense_to_spconv_weight(weight: Tensor) -> Tensor:
    """``(C_out, C_in, kh, kw)`` conv2d weight -> the tensor spconv 2.3 expects.

    spconv's modules declare ``(C_out, kh, kw, C_in)``; the layout its kernels
    read was established by probing with one-hot kernels (see
    ``tests/models/sparse/test_spconv_backend.py``), which also checks it.
    """
    return weight.permute(0, 2, 3, 1).contiguous()


class SpconvConv2d:
    """Applies dense ``nn.Conv2d`` weights as a sparse convolution.

    Stride-1 convolutions are submanifold (``SubMConv2d``: outputs only at visible
    sites). Strided ones are regular sparse convolutions whose outputs are
    re-masked to the coarser visible grid, which is what the masked backend computes.
    """

    def __init__(self):
        self.spconv = import_spconv()
        self._layers: Dict[int, nn.Module] = {}

    def _module_for(self, conv: nn.Conv2d) -> nn.Module:
        key = id(conv)
        if key not in self._layers:
            if conv.groups != 1 or conv.dilation != (1, 1):
                raise ValueError('spconv backend supports groups=1, dilation=1 convolutions only')
            cls = self.spconv.SubMConv2d if conv.stride == (1, 1) else self.spconv.SparseConv2d
            self._layers[key] = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                                     stride=conv.stride, padding=conv.padding, bias=False)
        return self._layers[key]

    def __call__(self, conv: nn.Conv2d, x: Tensor, mask_in: Tensor, mask_out: Tensor) -> Tensor:
        """``x (B, C, H, W)`` visible where ``mask_in (B, 1, H, W)``; returns the conv output
        ``(B, C', H', W')`` masked by ``mask_out``."""
        batch, _, height, width = x.shape
        indices = mask_in[:, 0].nonzero().int()  # (N, 3): batch, y, x
        features = x.permute(0, 2, 3, 1)[indices[:, 0].long(), indices[:, 1].long(),
                                         indices[:, 2].long()]
        sparse = self.spconv.SparseConvTensor(features, indices, [height, width], batch)
        module = self._module_for(conv).to(x.device)
        weight = dense_to_spconv_weight(conv.weight).to(features.dtype)
        out = functional_call(module, {'weight': weight}, (sparse,)).dense()
        out = out[..., :mask_out.shape[-2], :mask_out.shape[-1]]
        if conv.bias is not None:
            out = out + conv.bias.view(1, -1, 1, 1)
        return out * mask_out
