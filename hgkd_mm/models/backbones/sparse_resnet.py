"""Sparse ResNet student: mmpretrain's ResNet run with submanifold semantics."""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmpretrain.models.backbones import ResNet
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
from mmpretrain.registry import MODELS

from ..sparse import MaskPyramid, SpconvConv2d, to_masked_norm

BACKENDS = ('masked', 'spconv')


@MODELS.register_module()
class HGKDSparseResNet(ResNet):
    """ResNet whose every conv, pool and norm is submanifold-sparse.

    Parameter names are those of mmpretrain's :class:`ResNet`, so a trained
    student is a dense ResNet checkpoint after a key rename (or none).

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        backend (str): ``'masked'`` (dense conv times the mask) or ``'spconv'``
            (real sparse convolution); both give the same features.
        norm_cfg (dict): ``dict(type='MaskedBatchNorm2d')`` or
            ``dict(type='MaskedSyncBatchNorm2d')``; plain ``BN``/``SyncBN``
            are accepted and mapped to these.
        out_indices (Sequence[int]): stages to return, default all four
            (strides 4, 8, 16, 32).
        zero_init_residual (bool): as in ResNet; off by default, as in SparK.
        norm_impl (str): the masked norms' training-mode implementation: ``'torch'``
            (default) or ``'triton'`` (fused norm + ReLU kernels for the eager path on a
            GPU; see :class:`MaskedBatchNorm2d`). Same results.
        **kwargs: other :class:`mmpretrain.models.ResNet` arguments.

    Forward:
        ``inputs (B, 3, H, W)`` with ``H, W`` multiples of 32, ``mask (B, H/32, W/32)``
        bool (True = visible) or None (all visible). Returns a tuple of
        ``(B, C_i, H/s_i, W/s_i)`` features, zero at masked positions.
    """
    stride = 32

    def __init__(self,
                 depth: int,
                 backend: str = 'masked',
                 norm_cfg: dict = dict(type='MaskedBatchNorm2d'),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 zero_init_residual: bool = False,
                 norm_impl: str = 'torch',
                 **kwargs):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        for option in ('deep_stem', 'avg_down', 'with_cp'):
            if kwargs.get(option):
                raise ValueError(f'HGKDSparseResNet uses the standard ResNet; {option}=True '
                                 'is not supported')
        norm_type = norm_cfg.get('type', '')
        if norm_type not in ('MaskedBatchNorm2d', 'MaskedSyncBatchNorm2d', 'BN', 'SyncBN'):
            raise ValueError('norm_cfg.type must be MaskedBatchNorm2d or MaskedSyncBatchNorm2d, '
                             f'got {norm_type!r}')
        dense_norm_cfg = dict(norm_cfg, type='BN')
        super().__init__(depth, norm_cfg=dense_norm_cfg, out_indices=out_indices,
                         zero_init_residual=zero_init_residual, **kwargs)
        self._to_masked_norms(self, sync='Sync' in norm_type, impl=norm_impl)
        self.backend = backend
        # holds no parameters and no mask state, only spconv's per-layer modules
        self.spconv_conv = SpconvConv2d() if backend == 'spconv' else None

    def _to_masked_norms(self, module: nn.Module, sync: bool, impl: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, to_masked_norm(child, sync, impl))
            else:
                self._to_masked_norms(child, sync, impl)

    def sparse_conv(self, conv: nn.Conv2d, x: Tensor, masks: MaskPyramid,
                    masked_norm_next: bool = False) -> Tensor:
        """Sparse ``conv(x)``: ``x`` is zero where masked, so is the output, except that the
        ``masked`` backend leaves the masking to the masked norm that follows when
        ``masked_norm_next`` (one full-size multiply less, forward and backward)."""
        if self.spconv_conv is None:
            out = conv(x)
            return out if masked_norm_next else out * masks.at(out)
        out_size = tuple((size + 2 * p - k) // s + 1 for size, p, k, s in
                         zip(x.shape[-2:], conv.padding, conv.kernel_size, conv.stride))
        return self.spconv_conv(conv, x, masks.at(x), masks.of_size(out_size, x.dtype))

    def run_block(self, block: nn.Module, x: Tensor, masks: MaskPyramid) -> Tensor:
        """The forward of mmpretrain's BasicBlock/Bottleneck, with the mask."""
        if isinstance(block, Bottleneck):
            layers = [(block.conv1, block.norm1), (block.conv2, block.norm2),
                      (block.conv3, block.norm3)]
        elif isinstance(block, BasicBlock):
            layers = [(block.conv1, block.norm1), (block.conv2, block.norm2)]
        else:
            raise TypeError(f'unsupported ResNet block {type(block).__name__}')
        out = x
        for i, (conv, norm) in enumerate(layers):
            out = self.sparse_conv(conv, out, masks, masked_norm_next=True)
            out = norm(out, masks.at(out), relu=i < len(layers) - 1)
        identity = x
        if block.downsample is not None:
            down_conv, down_norm = block.downsample
            identity = self.sparse_conv(down_conv, x, masks, masked_norm_next=True)
            identity = down_norm(identity, masks.at(identity))
        return F.relu(block.drop_path(out) + identity)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        batch, _, height, width = inputs.shape
        if height % self.stride or width % self.stride:
            raise ValueError(f'input size {height}x{width} must be a multiple of {self.stride} '
                             '(the student stride); check the crop/resize size in the pipeline')
        if mask is None:
            mask = inputs.new_ones(batch, height // self.stride, width // self.stride,
                                   dtype=bool)
        elif tuple(mask.shape) != (batch, height // self.stride, width // self.stride):
            raise ValueError(f'mask shape {tuple(mask.shape)} must be (B, H/32, W/32) = '
                             f'{(batch, height // self.stride, width // self.stride)}')
        masks = MaskPyramid(mask)
        x = inputs * masks.at(inputs)
        x = self.sparse_conv(self.conv1, x, masks, masked_norm_next=True)
        x = self.norm1(x, masks.at(x), relu=True)
        x = self.maxpool(x)
        x = x * masks.at(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            for block in getattr(self, layer_name):
                x = self.run_block(block, x, masks)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
