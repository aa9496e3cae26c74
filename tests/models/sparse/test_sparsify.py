"""SparseCNN, the mechanism: no mask state (two students, threads, torch.compile without
graph breaks, pickling), squeeze-excite over visible positions, masked pixels never reach
an output, stage widths and strides, and the refusals."""
import copy
import pickle
import threading

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import ConvNeXt, ResNet, SEResNet

from helpers import random_mask

from hgkd_mm.models.backbones import (HGKDSparseConvNeXt, HGKDSparseMobileNetV2,
                                      HGKDSparseResNetV1c, HGKDSparseResNetV1d, HGKDSparseResNeXt,
                                      student_stages)
from hgkd_mm.models.sparse import MaskedBatchNorm2d, MaskPyramid, SparseCNN
from hgkd_mm.models.sparse.sparsify import visible_mean

TINY_CONVNEXT = dict(arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 24, 32]))


class SparseSEResNet(SparseCNN, SEResNet):
    """A student made the same way from another mmpretrain CNN (not registered)."""


def evaluated(model):
    model.eval()  # mmpretrain's train() overrides return None
    return model


def pixel_mask(mask, cell=32):
    return mask[:, None].repeat_interleave(cell, 2).repeat_interleave(cell, 3)


def test_two_students_with_different_masks_in_threads():
    torch.manual_seed(0)
    students = [evaluated(HGKDSparseConvNeXt(**TINY_CONVNEXT)) for _ in range(2)]
    students[1].load_state_dict(students[0].state_dict())
    inputs = torch.randn(2, 3, 64, 64)
    masks = [random_mask(2, 2, 2, keep=2, seed=s) for s in (1, 2)]
    alone = [s(inputs, m)[-1] for s, m in zip(students, masks)]
    assert not torch.equal(alone[0], alone[1])
    together = [None, None]

    def run(i, student):
        for _ in range(5):
            together[i] = student(inputs, masks[i])[-1]

    # the same student in both threads, then one each
    for pair in ((students[0], students[0]), students):
        threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(pair)]
        [t.start() for t in threads], [t.join() for t in threads]
        for got, expected in zip(together, alone):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_compiles_without_graph_breaks():
    torch.manual_seed(0)
    student = HGKDSparseConvNeXt(**TINY_CONVNEXT, use_grn=True)
    inputs, mask = torch.randn(2, 3, 64, 64), random_mask(2, 2, 2, keep=2)
    expected = student(inputs, mask)
    torch._dynamo.reset()
    compiled = torch.compile(student, backend='aot_eager', fullgraph=True)
    for got, want in zip(compiled(inputs, mask), expected):
        torch.testing.assert_close(got, want)


def test_pickle_and_deepcopy_keep_the_sparse_forward():
    torch.manual_seed(0)
    student = evaluated(HGKDSparseMobileNetV2(widen_factor=0.25))
    inputs, mask = torch.randn(2, 3, 64, 64), random_mask(2, 2, 2, keep=3)
    expected = student(inputs, mask)
    for copied in (pickle.loads(pickle.dumps(student)), copy.deepcopy(student)):
        for got, want in zip(copied(inputs, mask), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('student', [
    lambda: HGKDSparseConvNeXt(**TINY_CONVNEXT, use_grn=True, layer_scale_init_value=0.),
    lambda: HGKDSparseMobileNetV2(widen_factor=0.25),
    lambda: HGKDSparseResNetV1d(18, base_channels=8, stem_channels=8),
    lambda: SparseSEResNet(50, base_channels=8, stem_channels=8, out_indices=(0, 1, 2, 3)),
], ids=['convnext-v2', 'mobilenet-v2', 'resnet-v1d', 'se-resnet'])
def test_masked_pixels_never_reach_an_output(student):
    torch.manual_seed(0)
    student = student().double()
    inputs = torch.randn(3, 3, 64, 96, dtype=torch.float64)
    mask = random_mask(3, 2, 3, keep=3)
    hidden = ~pixel_mask(mask)
    outs = student(inputs, mask)
    changed = student(inputs + 100 * torch.randn_like(inputs) * hidden, mask)
    for out, other in zip(outs, changed):
        torch.testing.assert_close(other, out, rtol=1e-12, atol=1e-12)
        cell = 32 * out.shape[-1] // 96
        assert not (out * ~pixel_mask(mask, cell)).any()  # zero where masked
        assert out.abs().sum() > 0


def test_squeeze_excite_pools_visible_positions():
    torch.manual_seed(0)
    student = SparseSEResNet(50, base_channels=8, stem_channels=8, out_indices=(3, )).double()
    pools = [m for m in student.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert pools  # every SE layer's global pool runs as visible_mean
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    mask = random_mask(2, 2, 2, keep=1)
    visible = pixel_mask(mask, 4)
    expected = torch.stack([x[b][:, visible[b, 0]].mean(1) for b in range(2)])
    got = visible_mean(pools[0], MaskPyramid(mask), x * visible)
    torch.testing.assert_close(got[..., 0, 0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('student, widths, strides', [
    (lambda: HGKDSparseConvNeXt(**TINY_CONVNEXT), (8, 16, 24, 32), (4, 8, 16, 32)),
    (lambda: HGKDSparseMobileNetV2(), (24, 32, 96, 1280), (4, 8, 16, 32)),
    (lambda: HGKDSparseMobileNetV2(out_indices=(0, 6)), (16, 320), (2, 32)),
    (lambda: HGKDSparseResNeXt(50, out_indices=(1, 3)), (512, 2048), (8, 32)),
    (lambda: HGKDSparseResNetV1c(18, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                                 out_indices=(0, 1, 2)), (64, 128, 256), (4, 8, 16)),
])
def test_stage_widths_and_strides(student, widths, strides):
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    student = student()
    assert (student.out_channels, student.out_strides) == (widths, strides)
    assert student.stride == max(strides)
    torch.random.set_rng_state(state)


def test_mask_cell_16_and_64():
    torch.manual_seed(0)
    student = evaluated(HGKDSparseResNetV1c(18, num_stages=3, strides=(1, 2, 2),
                                            dilations=(1, 1, 1), out_indices=(0, 1, 2),
                                            base_channels=8, stem_channels=8))
    assert student.stride == 16
    inputs = torch.randn(2, 3, 64, 96)
    for cell in (16, 32):
        mask = random_mask(2, 64 // cell, 96 // cell, keep=2)
        outs = student(inputs, mask)
        assert not (outs[-1] * ~pixel_mask(mask, cell // 16)).any()
    deep = evaluated(HGKDSparseConvNeXt(**TINY_CONVNEXT))
    inputs = torch.randn(2, 3, 128, 64)
    mask = random_mask(2, 2, 1, keep=1)  # 64-pixel cells
    out = deep(inputs, mask)[-1]
    assert not (out * ~pixel_mask(mask, 2)).any() and out.abs().sum() > 0
    with pytest.raises(ValueError, match='mask cell 16 px must be a multiple of the student '
                       'stride 32'):
        deep(inputs, random_mask(2, 8, 4, keep=3))
    with pytest.raises(ValueError, match='does not split the 128x64 input into square cells'):
        deep(inputs, random_mask(2, 2, 2, keep=1))
    with pytest.raises(ValueError, match='mask must be a .B, h, w. bool tensor'):
        deep(inputs, random_mask(2, 4, 2, keep=1).float())


def test_mask_cell_option_sets_the_grid():
    torch.manual_seed(0)
    student = HGKDSparseConvNeXt(**TINY_CONVNEXT, mask_cell=64)
    assert student.grid_size(torch.zeros(1, 3, 128, 192)) == (2, 3)
    assert HGKDSparseConvNeXt(**TINY_CONVNEXT).grid_size(torch.zeros(1, 3, 224, 320)) == (7, 10)
    with pytest.raises(ValueError, match=r'input size 128x96 must be a multiple of the mask '
                       r'cell 64 \(backbone.mask_cell\)'):
        student.grid_size(torch.zeros(1, 3, 128, 96))
    with pytest.raises(ValueError, match='backbone.mask_cell=48 must be a multiple of the '
                       'student stride 32'):
        HGKDSparseConvNeXt(**TINY_CONVNEXT, mask_cell=48)
    assert student_stages(dict(type='HGKDSparseMobileNetV2', widen_factor=0.5)) == (
        (16, 16, 48, 1280), (4, 8, 16, 32))


def test_unsupported_layers_are_refused_by_name():
    class GroupNormResNet(SparseCNN, ResNet):
        pass

    with pytest.raises(TypeError, match=r"no sparse rule for layer 'gn1' \(GroupNorm\)"):
        GroupNormResNet(18, norm_cfg=dict(type='GN', num_groups=4))

    class PooledConvNeXt(SparseCNN, ConvNeXt):
        pass

    with pytest.raises(TypeError, match='applies mean to a feature map.*gap_before_final_norm'):
        PooledConvNeXt(**TINY_CONVNEXT, gap_before_final_norm=True)


def test_batch_norms_become_masked_with_the_same_keys():
    student = HGKDSparseResNetV1c(18, norm_cfg=dict(type='SyncBN'))
    norms = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    assert norms and all(isinstance(m, MaskedBatchNorm2d) and m.sync for m in norms)
