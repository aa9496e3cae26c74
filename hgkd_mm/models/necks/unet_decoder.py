"""Densify the sparse student features and decode them to the teacher's token grid."""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from mmpretrain.registry import MODELS

from ..sparse import MaskedBatchNorm2d, MaskedSyncBatchNorm2d, MaskPyramid


@MODELS.register_module()
class HGKDUNetDecoder(BaseModule):
    """Light UNet decoder from the deepest stage up to the teacher's grid (SparK steps 4-5).

    Each used stage is densified (masked BatchNorm, a learned mask token at
    masked positions, a projection to ``channels``). Decoding starts at the
    deepest stage; every step upsamples to the next used stride (a transposed conv by
    the stride ratio, x2 for strides 32, 16, 8, 4), adds the densified skip of that
    stride and applies two 3x3 conv blocks. It stops at the finest student stride that is
    not below ``out_stride`` (the teacher's patch size), not at full resolution: any
    stem (stride 2 or 4) and finer stages are left out. When that stride is not
    ``out_stride`` (a patch-14 teacher over stride-16 features) the result is resized
    bilinearly onto the teacher grid, ``ceil(H / out_stride) x ceil(W / out_stride)``
    (mmpretrain's ViT pads the image to whole patches).

    Args:
        in_channels (Sequence[int]): channels of the student stages.
        in_strides (Sequence[int]): strides of those stages (any order).
        out_stride (int): the teacher's patch size, e.g. 16 or 14.
        channels (int): decoder width.
        norm_cfg (dict): norm of the dense decoder blocks.
        sync_masked_norm (bool): all-reduce the densify norms' statistics.

    Forward:
        ``features``: tuple of ``(B, C_i, H/s_i, W/s_i)``; ``mask (B, H/cell, W/cell)``
        bool. Returns ``(B, channels, ceil(H/out_stride), ceil(W/out_stride))``.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (256, 512, 1024, 2048),
                 in_strides: Sequence[int] = (4, 8, 16, 32),
                 out_stride: int = 16,
                 channels: int = 256,
                 norm_cfg: dict = dict(type='BN'),
                 sync_masked_norm: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != len(in_strides):
            raise ValueError('neck.in_channels and neck.in_strides must have the same length')
        if not 0 < out_stride <= max(in_strides):
            raise ValueError(f'neck.out_stride={out_stride} (the teacher patch size) must be in '
                             f'(0, {max(in_strides)}], the deepest of the student strides '
                             f'{tuple(in_strides)}')
        self.in_strides = tuple(in_strides)
        self.out_stride = out_stride
        # stage indices used, deepest first
        self.used = [i for i in sorted(range(len(in_strides)), key=lambda i: -in_strides[i])
                     if in_strides[i] >= out_stride]
        used_strides = [in_strides[i] for i in self.used]
        for deeper, finer in zip(used_strides, used_strides[1:]):
            if deeper % finer:
                raise ValueError(f'neck.in_strides: stride {deeper} is not a multiple of the '
                                 f'next finer stride {finer}')
        norm_cls = MaskedSyncBatchNorm2d if sync_masked_norm else MaskedBatchNorm2d
        self.densify_norms = nn.ModuleList(norm_cls(in_channels[i]) for i in self.used)
        self.mask_tokens = nn.ParameterList(
            nn.Parameter(torch.zeros(1, in_channels[i], 1, 1)) for i in self.used)
        self.projections = nn.ModuleList(
            nn.Conv2d(in_channels[i], channels, kernel_size=1 if j == 0 else 3,
                      padding=0 if j == 0 else 1) for j, i in enumerate(self.used))
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels, deeper // finer, stride=deeper // finer)
            if deeper > finer else nn.Identity()
            for deeper, finer in zip(used_strides, used_strides[1:]))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg),
                ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg))
            for _ in self.used)
        self.channels = channels

    def init_weights(self) -> None:
        super().init_weights()
        for token in self.mask_tokens:
            trunc_normal_(token, mean=0, std=.02, a=-.02, b=.02)

    def densify(self, j: int, feature: Tensor, masks: MaskPyramid) -> Tensor:
        """Masked norm, mask token where masked, projection: ``(B, channels, h, w)``."""
        visible = masks.at(feature)
        normed = self.densify_norms[j](feature, visible)
        # normed is zero where masked: add the token there
        filled = torch.addcmul(normed, 1 - visible, self.mask_tokens[j].to(normed.dtype))
        return self.projections[j](filled)

    def forward(self, features: Tuple[Tensor, ...], mask: Tensor) -> Tensor:
        if len(features) != len(self.in_strides):
            raise ValueError(f'neck expects {len(self.in_strides)} stage features, got '
                             f'{len(features)}; set backbone.out_indices=(0, 1, 2, 3)')
        masks = MaskPyramid(mask)
        x = None
        for j, i in enumerate(self.used):
            skip = self.densify(j, features[i], masks)
            x = skip if x is None else self.upsamples[j - 1](x) + skip
            x = self.blocks[j](x)
        deepest = features[self.used[0]]
        size = tuple(math.ceil(n * self.in_strides[self.used[0]] / self.out_stride)
                     for n in deepest.shape[-2:])
        if tuple(x.shape[-2:]) != size:  # a patch size that is not a student stride
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        return x

