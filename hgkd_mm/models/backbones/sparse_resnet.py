"""Sparse ResNet student: mmpretrain's ResNet run with submanifold semantics."""
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch import Tensor

from mmpretrain.models.backbones import ResNet
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
from mmpretrain.registry import MODELS

from ..sparse import MaskPyramid, PackedLayout, SpconvConv2d, to_masked_norm
from ..sparse.sparsify import cell_grid, check_mask_cell

BACKENDS = ('masked', 'packed', 'spconv')


def add_residual(drop_path: nn.Module, out: Tensor, identity: Tensor) -> Tensor:
    """``drop_path(out) + identity``. mmcv's training-mode ``DropPath`` computes
    ``out / keep * floor(keep + u)`` and the sum in three passes over ``out``; here the same
    draw ``u`` scales ``out`` inside one ``addcmul`` (forward and backward)."""
    if not (isinstance(drop_path, DropPath) and drop_path.training and drop_path.drop_prob > 0):
        return drop_path(out) + identity
    keep = 1 - drop_path.drop_prob
    shape = (out.shape[0], ) + (1, ) * (out.ndim - 1)
    kept = torch.rand(shape, dtype=out.dtype, device=out.device).add_(keep).floor_()  # 0 or 1
    return torch.addcmul(identity, out, kept, value=1 / keep)


@MODELS.register_module()
class HGKDSparseResNet(ResNet):
    """ResNet whose every conv, pool and norm is submanifold-sparse.

    Parameter names are those of mmpretrain's :class:`ResNet`, so a trained
    student is a dense ResNet checkpoint after a key rename (or none).

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        backend (str): ``'masked'`` (dense conv times the mask), ``'packed'`` (the
            visible positions packed into tiles: 1x1 convs, norms and elementwise ops on
            those only, other convs dense; needs the same number of visible cells in
            every sample, see :mod:`..sparse.packed_ops`) or ``'spconv'`` (real sparse
            convolution); all give the same features.
        norm_cfg (dict): ``dict(type='MaskedBatchNorm2d')`` or
            ``dict(type='MaskedSyncBatchNorm2d')``; plain ``BN``/``SyncBN``
            are accepted and mapped to these.
        out_indices (Sequence[int]): stages to return, default all four
            (strides 4, 8, 16, 32).
        zero_init_residual (bool): as in ResNet; off by default, as in SparK.
        mask_cell (int): the side of the square mask cells H-GKD draws
            (:meth:`grid_size`), a multiple of 32 (default 32: one cell per stride-32
            position; 64: 2x2 positions per cell).
        norm_impl (str): the masked norms' training-mode implementation: ``'torch'``
            (default) or ``'triton'`` (fused norm + ReLU kernels for the eager path on a
            GPU; see :class:`MaskedBatchNorm2d`). Same results. The ``packed`` backend
            has no masked norms (``BatchNorm2d`` over the packed positions) and takes
            ``'torch'`` only.
        **kwargs: other :class:`mmpretrain.models.ResNet` arguments.

    Forward:
        ``inputs (B, 3, H, W)`` with ``H, W`` multiples of ``mask_cell``, ``mask (B,
        H/mask_cell, W/mask_cell)`` bool (True = visible) or None (all visible), and for
        ``packed`` optionally ``num_visible``, the visible cells of ``mask`` per sample
        (checked on the device; without it the ``packed`` backend counts them on the
        host). Returns a tuple of
        ``(B, C_i, H/s_i, W/s_i)`` features, zero at masked positions.
    """
    stride = 32

    def __init__(self,
                 depth: int,
                 backend: str = 'masked',
                 norm_cfg: dict = dict(type='MaskedBatchNorm2d'),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 zero_init_residual: bool = False,
                 mask_cell: int = 32,
                 norm_impl: str = 'torch',
                 **kwargs):
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if backend == 'packed' and norm_impl != 'torch':
            raise ValueError(f"norm_impl={norm_impl!r} is for the masked norms of "
                             "backend='masked'; backend='packed' normalises with BatchNorm2d "
                             "(norm_impl='torch')")
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
        self.mask_cell = check_mask_cell(mask_cell, self.stride, 'HGKDSparseResNet')
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

    @staticmethod
    def block_layers(block: nn.Module):
        """``[(conv, norm), ...]`` of mmpretrain's BasicBlock/Bottleneck, in order."""
        if isinstance(block, Bottleneck):
            return [(block.conv1, block.norm1), (block.conv2, block.norm2),
                    (block.conv3, block.norm3)]
        if isinstance(block, BasicBlock):
            return [(block.conv1, block.norm1), (block.conv2, block.norm2)]
        raise TypeError(f'unsupported ResNet block {type(block).__name__}')

    def run_block(self, block: nn.Module, x: Tensor, conv: Callable, norm: Callable) -> Tensor:
        """The forward of mmpretrain's BasicBlock/Bottleneck with the backend's sparse
        ``conv(module, x)`` and ``norm(module, x, relu)``."""
        layers = self.block_layers(block)
        out = x
        for i, (conv_layer, norm_layer) in enumerate(layers):
            out = norm(norm_layer, conv(conv_layer, out), relu=i < len(layers) - 1)
        identity = x
        if block.downsample is not None:
            down_conv, down_norm = block.downsample
            identity = norm(down_norm, conv(down_conv, x), relu=False)
        return F.relu(add_residual(block.drop_path, out, identity), inplace=True)

    def run_stages(self, x: Tensor, conv: Callable, norm: Callable,
                   output: Callable = lambda x: x) -> Tuple[Tensor, ...]:
        """The residual stages from the stem's output: ``output(x)`` of each stage in
        ``out_indices``."""
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            for block in getattr(self, layer_name):
                x = self.run_block(block, x, conv, norm)
            if i in self.out_indices:
                outs.append(output(x))
        return tuple(outs)

    @staticmethod
    def packed_conv(conv: nn.Conv2d, x: Tensor, layout: PackedLayout) -> Tensor:
        """Sparse ``conv`` of the packed ``x``: a 1x1 conv runs on the tiles; others run
        dense in between a scatter and a gather."""
        stride = conv.stride[0]
        if (conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.stride[1] == stride
                and x.shape[-1] % stride == 0):
            return conv(x)
        return layout.gather(conv(layout.scatter(x)))

    def forward_packed(self, x: Tensor, mask: Tensor,
                       num_visible: Optional[int]) -> Tuple[Tensor, ...]:
        """The ``packed`` backend's forward of the masked image ``x``: features stay packed
        (norms are ``BatchNorm2d`` over the visible positions) and are scattered to dense
        maps at the outputs."""
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layout = PackedLayout(mask, num_visible, channels_last)
        x = self.norm1(layout.gather(self.conv1(x)), relu=True)
        x = layout.gather(self.maxpool(layout.scatter(x)))
        return self.run_stages(x, conv=lambda conv, x: self.packed_conv(conv, x, layout),
                               norm=lambda norm, x, relu: norm(x, relu=relu),
                               output=layout.scatter)

    def grid_size(self, inputs: Tensor) -> Tuple[int, int]:
        """``(H / mask_cell, W / mask_cell)``, the mask grid of ``inputs (B, 3, H, W)``;
        refuses sizes that are not multiples of the cell."""
        return cell_grid(inputs, self.mask_cell)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None,
                num_visible: Optional[int] = None) -> Tuple[Tensor, ...]:
        if mask is None:
            mask = inputs.new_ones(inputs.shape[0], *self.grid_size(inputs), dtype=bool)
            num_visible = mask[0].numel()
        elif (mask.shape[0], *(size * self.mask_cell for size in mask.shape[1:])) != (
                inputs.shape[0], *inputs.shape[-2:]):  # a mask from grid_size() fits
            raise ValueError(f'mask shape {tuple(mask.shape)} does not fit the inputs '
                             f'{tuple(inputs.shape)}: it must be (B, H/{self.mask_cell}, '
                             f'W/{self.mask_cell}), with H and W multiples of the mask cell '
                             f'{self.mask_cell} (backbone.mask_cell)')
        repeat = self.mask_cell // self.stride
        if repeat > 1:  # each cell: repeat x repeat stride-32 positions
            mask = mask.repeat_interleave(repeat, 1).repeat_interleave(repeat, 2)
            num_visible = None if num_visible is None else num_visible * repeat**2
        masks = MaskPyramid(mask)
        x = inputs * masks.at(inputs)
        if self.backend == 'packed':
            return self.forward_packed(x, mask, num_visible)
        x = self.sparse_conv(self.conv1, x, masks, masked_norm_next=True)
        x = self.norm1(x, masks.at(x), relu=True)
        x = self.maxpool(x)
        x = x * masks.at(x)
        return self.run_stages(
            x, conv=lambda conv, x: self.sparse_conv(conv, x, masks, masked_norm_next=True),
            norm=lambda norm, x, relu: norm(x, masks.at(x), relu=relu))
