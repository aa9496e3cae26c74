"""Sparse students made from mmpretrain's dense CNNs by :class:`SparseCNN` (one mechanism,
no per-architecture code). Each takes its dense class's arguments; the defaults differ only
where pretraining needs it (all stages returned, no global pooling, no zero-init residual)."""
from typing import Sequence, Tuple

import torch
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones import (ConvNeXt, MobileNetV2, ResNet, ResNetV1c, ResNetV1d,
                                         ResNeXt)
from mmpretrain.registry import MODELS

from ..sparse.sparsify import SparseCNN


@MODELS.register_module()
class HGKDSparseConvNeXt(SparseCNN, ConvNeXt):
    """Sparse ConvNeXt; ConvNeXt V2 with ``use_grn=True, layer_scale_init_value=0.``
    (GRN's norm over visible positions). Stage outputs pass the dense model's output norms
    ``norm0``-``norm3``, as mmdet/mmseg use it."""

    def __init__(self, arch='tiny', out_indices: Sequence[int] = (0, 1, 2, 3),
                 gap_before_final_norm: bool = False, **kwargs):
        super().__init__(arch=arch, out_indices=list(out_indices),
                         gap_before_final_norm=gap_before_final_norm, **kwargs)


class _SparseResNetFamily(SparseCNN):
    """ResNet-family defaults: all four stages, no zero-init residual (as SparK)."""

    def __init__(self, depth: int, out_indices: Sequence[int] = (0, 1, 2, 3),
                 zero_init_residual: bool = False, **kwargs):
        super().__init__(depth=depth, out_indices=tuple(out_indices),
                         zero_init_residual=zero_init_residual, **kwargs)


@MODELS.register_module()
class HGKDSparseResNetV1c(_SparseResNetFamily, ResNetV1c):
    """Sparse ResNetV1c (deep stem). Through :class:`SparseCNN`: the ``masked`` semantics,
    not the ``packed`` backend of :class:`HGKDSparseResNet`."""


@MODELS.register_module()
class HGKDSparseResNetV1d(_SparseResNetFamily, ResNetV1d):
    """Sparse ResNetV1d (deep stem, average-pool downsampling)."""


@MODELS.register_module()
class HGKDSparseResNeXt(_SparseResNetFamily, ResNeXt):
    """Sparse ResNeXt (grouped convolutions; ``groups``, ``width_per_group`` as ResNeXt)."""


@MODELS.register_module()
class HGKDSparseResNetMasked(_SparseResNetFamily, ResNet):
    """The standard ResNet through :class:`SparseCNN` (same results as
    ``HGKDSparseResNet(backend='masked')``, which stays the ResNet student)."""


@MODELS.register_module()
class HGKDSparseMobileNetV2(SparseCNN, MobileNetV2):
    """Sparse MobileNetV2. Default outputs: layers 2, 3, 5 and the final 1x1 conv
    (``out_indices=(1, 2, 4, 7)``: strides 4, 8, 16, 32; widths 24, 32, 96, 1280 at
    ``widen_factor=1``)."""

    def __init__(self, out_indices: Sequence[int] = (1, 2, 4, 7), **kwargs):
        super().__init__(out_indices=tuple(out_indices), **kwargs)


def student_stages(backbone: dict) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """``(widths, strides)`` of the stages a :class:`SparseCNN` student config returns (it
    is built once on the CPU and dropped; the RNG state is restored)."""
    with torch.random.fork_rng(devices=[]), DefaultScope.overwrite_default_scope('mmpretrain'):
        student = MODELS.build(backbone)
    if not isinstance(student, SparseCNN):
        raise TypeError(f"{backbone.get('type')!r} is not a SparseCNN student: give "
                        'neck.in_channels and neck.in_strides')
    return student.out_channels, student.out_strides
