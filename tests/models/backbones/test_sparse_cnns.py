"""The SparseCNN students against mmpretrain: the dense backbones (float64, mask None and
all cells visible, train and eval) and, under a mask, SparseConvNeXt, SparseResNet and
mmpretrain's own dense-to-sparse conversion (SparK's, for MobileNetV2 and ResNeXt)."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones import (ConvNeXt, MobileNetV2, ResNetV1c, ResNetV1d, ResNeXt,
                                         SparseConvNeXt, SparseResNet)
from mmpretrain.models.utils import GRN
from mmpretrain.models.utils.sparse_modules import SparseHelper, SparseLayerNorm2D

from helpers import random_mask

from hgkd_mm.models.backbones import (HGKDSparseConvNeXt, HGKDSparseMobileNetV2,
                                      HGKDSparseResNetV1c, HGKDSparseResNetV1d, HGKDSparseResNeXt)

CONVNEXT_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 24, 32])
# (student class, dense class, arguments of both)
FAMILIES = {
    'convnext': (HGKDSparseConvNeXt, ConvNeXt, dict(arch=CONVNEXT_ARCH)),
    'convnext-v2': (HGKDSparseConvNeXt, ConvNeXt,
                    dict(arch=CONVNEXT_ARCH, use_grn=True, layer_scale_init_value=0.)),
    'mobilenet-v2': (HGKDSparseMobileNetV2, MobileNetV2, dict(widen_factor=0.25)),
    'resnet-v1c': (HGKDSparseResNetV1c, ResNetV1c, dict(depth=18, base_channels=8,
                                                        stem_channels=8)),
    'resnet-v1d': (HGKDSparseResNetV1d, ResNetV1d, dict(depth=50, base_channels=8,
                                                        stem_channels=8)),
    'resnext': (HGKDSparseResNeXt, ResNeXt, dict(depth=50, groups=4, width_per_group=4,
                                                 base_channels=16, stem_channels=16)),
}
# the students' defaults, given to the dense classes
OUT = {ConvNeXt: dict(out_indices=[0, 1, 2, 3], gap_before_final_norm=False),
       MobileNetV2: dict(out_indices=(1, 2, 4, 7)),
       ResNetV1c: dict(out_indices=(0, 1, 2, 3), zero_init_residual=False)}
OUT[ResNetV1d] = OUT[ResNeXt] = OUT[ResNetV1c]


def dense_args(family: str) -> dict:
    _, dense_cls, args = FAMILIES[family]
    return dict(args, **OUT[dense_cls])


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial norm, GRN and layer-scale parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm)):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=g))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=g))
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape,
                                                            generator=g))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape,
                                                          generator=g))
            if isinstance(module, GRN):
                module.gamma.copy_(torch.randn(module.gamma.shape, generator=g))
                module.beta.copy_(0.2 * torch.randn(module.beta.shape, generator=g))
            if isinstance(getattr(module, 'gamma', None), nn.Parameter) and not isinstance(
                    module, GRN):
                module.gamma.copy_(0.5 + torch.rand(module.gamma.shape, generator=g))
    return model


def build_pair(family: str):
    """``(student, dense)`` in float64 with the same (randomised) weights."""
    student_cls, dense_cls, _ = FAMILIES[family]
    torch.manual_seed(0)
    dense = randomize(dense_cls(**dense_args(family))).double()
    student = student_cls(**FAMILIES[family][2]).double()
    student.load_state_dict(dense.state_dict(), strict=True)
    return student, dense


def pixel_mask(mask: torch.Tensor, cell: int = 32) -> torch.Tensor:
    return mask[:, None].repeat_interleave(cell, 2).repeat_interleave(cell, 3)


def assert_close(got, expected, rel=1e-9):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        err = (g - e).abs().max() / e.abs().max().clamp_min(1e-30)
        assert err < rel, f'relative error {err:.3g}'


@pytest.mark.parametrize('family', FAMILIES)
def test_state_dict_is_the_dense_backbones(family):
    student, dense = build_pair(family)
    expected = {k: v.shape for k, v in dense.state_dict().items()}
    assert {k: v.shape for k, v in student.state_dict().items()} == expected


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('train', [True, False])
def test_no_mask_and_all_visible_equal_the_dense_backbone(family, train):
    student, dense = build_pair(family)
    inputs = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    all_visible = torch.ones(2, 2, 3, dtype=torch.bool)
    results = []
    for model, mask in ((dense, None), (student, None), (student, all_visible)):
        model.train(train)
        x = inputs.clone().requires_grad_()
        outs = model(x) if mask is None else model(x, mask)
        torch.autograd.backward(outs, [o.detach().cos() for o in outs])
        results.append((outs, x.grad))
    (expected, expected_grad), *students = results
    for outs, grad in students:
        assert_close(outs, expected)
        assert_close([grad], [expected_grad])


def with_global_mask(model: nn.Module, mask: torch.Tensor, inputs: torch.Tensor):
    """An mmpretrain sparse model's outputs for ``inputs`` under ``mask`` (its global)."""
    SparseHelper._cur_active = mask[:, None]
    try:
        return model(inputs * pixel_mask(mask))
    finally:
        SparseHelper._cur_active = None


def spark_sparse(dense: nn.Module) -> nn.Module:
    """``dense`` converted by mmpretrain's dense-to-sparse function (SparK's)."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        converter = SparseResNet(18, norm_cfg=dict(type='SparseBatchNorm2d'))
    return converter.dense_model_to_sparse(dense, enable_sync_bn=False)


def sparse_reference(family: str, dense: nn.Module, student: nn.Module) -> nn.Module:
    args = dense_args(family)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if family.startswith('convnext'):
            args = dict(args, gap_before_output=args.pop('gap_before_final_norm'))
            reference = SparseConvNeXt(norm_cfg=dict(type='SparseLN2d', eps=1e-6), **args)
        elif family in ('resnet-v1c', 'resnet-v1d'):
            reference = SparseResNet(deep_stem=True, avg_down=family == 'resnet-v1d',
                                     norm_cfg=dict(type='SparseBatchNorm2d'), **args)
        else:
            return spark_sparse(copy.deepcopy(dense)).double()
    # SparseConvNeXt has no output norms (norm0-norm3): loaded without them
    reference.double().load_state_dict(dense.state_dict(), strict=not family.startswith('conv'))
    return reference


def reference_outputs(family, reference, student, inputs, mask):
    outs = with_global_mask(reference, mask, inputs)
    if not family.startswith('convnext'):
        return outs
    # the dense ConvNeXt's output norms, applied as mmpretrain's sparse LayerNorm
    normed = []
    for i, out in enumerate(outs):
        norm = SparseLayerNorm2D(out.shape[1], eps=1e-6).double()
        norm.load_state_dict(getattr(student, f'norm{i}').state_dict())
        SparseHelper._cur_active = mask[:, None]
        try:
            normed.append(norm(out))
        finally:
            SparseHelper._cur_active = None
    return normed


@pytest.mark.parametrize('family', ['convnext', 'mobilenet-v2', 'resnet-v1c', 'resnet-v1d',
                                    'resnext'])
def test_masked_equals_mmpretrain_sparse_reference(family):
    student, dense = build_pair(family)
    reference = sparse_reference(family, dense, student)
    student.train(), reference.train()
    inputs = torch.randn(3, 3, 96, 96, dtype=torch.float64)  # SparseHelper: square only
    mask = random_mask(3, 3, 3, keep=4)
    expected = reference_outputs(family, reference, student, inputs, mask)
    got = student(inputs, mask)
    assert_close(got, expected)
    # BatchNorm running statistics: the same visible-only (unbiased) update
    ref_state = reference.state_dict()
    for key, value in student.state_dict().items():
        if key.endswith(('running_mean', 'running_var')):
            assert_close([value], [ref_state[key]])


def zero_pointwise_bias(model: nn.Module) -> None:
    with torch.no_grad():
        for stage in model.stages:
            for block in stage:
                block.pointwise_conv1.bias.zero_()


def test_convnext_v2_grn_over_visible_positions():
    """mmpretrain's SparseConvNeXt leaves GELU(bias) of the first pointwise layer at masked
    positions, where its GRN counts them; here GRN's input is zero there. With that bias at
    zero both agree; otherwise the student equals SparseConvNeXt whose GRN input is masked."""
    student, dense = build_pair('convnext-v2')
    inputs = torch.randn(2, 3, 96, 96, dtype=torch.float64)
    mask = random_mask(2, 3, 3, keep=5)
    reference = sparse_reference('convnext-v2', dense, student)
    got = student(inputs, mask)
    expected = reference_outputs('convnext-v2', reference, student, inputs, mask)
    assert (got[-1] - expected[-1]).abs().max() > 1e-3  # mmpretrain's GRN sees masked values

    class VisibleGRN(nn.Module):
        def __init__(self, grn):
            super().__init__()
            self.grn = grn

        def forward(self, x, data_format):
            visible = SparseHelper._get_active_map_or_index(x.shape[1]).permute(0, 2, 3, 1)
            return self.grn(x * visible, data_format=data_format)

    for stage in reference.stages:
        for block in stage:
            block.grn = VisibleGRN(block.grn)
    assert_close(got, reference_outputs('convnext-v2', reference, student, inputs, mask))

    zero_pointwise_bias(student), zero_pointwise_bias(dense)
    plain = sparse_reference('convnext-v2', dense, student)
    assert_close(student(inputs, mask), reference_outputs('convnext-v2', plain, student,
                                                          inputs, mask))
