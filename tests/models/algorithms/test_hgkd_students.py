"""One real H-GKD training step (mmengine's train_step: data preprocessor, mask, teacher,
sparse student, decoder, loss, AdamW update) for every student family with a patch-16 ViT
and a patch-14 DINOv2-style teacher (LayerScale, registers), on the CPU; rectangular inputs
and mask cells of 16 and 64."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import hgkd_mm  # noqa: F401

from helpers import IMAGENET_PREPROCESSOR, TINY_TEACHER, TINY_VIT, tiny_hgkd_cfg

TINY_CONVNEXT = dict(type='HGKDSparseConvNeXt', arch=dict(depths=[1, 1, 1, 1],
                                                          channels=[16, 24, 32, 48]))
STUDENTS = {
    'convnext': TINY_CONVNEXT,
    'convnext-v2': dict(TINY_CONVNEXT, use_grn=True, layer_scale_init_value=0.),
    'mobilenet-v2': dict(type='HGKDSparseMobileNetV2', widen_factor=0.25),
    'resnet-v1c': dict(type='HGKDSparseResNetV1c', depth=18, base_channels=16,
                       stem_channels=16),
    'resnet-v1d': dict(type='HGKDSparseResNetV1d', depth=50, base_channels=8, stem_channels=8),
    'resnext': dict(type='HGKDSparseResNeXt', depth=50, groups=4, width_per_group=4,
                    base_channels=16, stem_channels=16),
}


TEACHERS = {
    'vit-p16': TINY_TEACHER,
    'dinov2-p14': dict(type='FrozenViTTeacher', arch=TINY_VIT, img_size=56, patch_size=14,
                       layer_scale_init_value=1e-5, num_register_tokens=4,
                       pos_embed_prefix=False),
}


def build(backbone: dict, **overrides):
    torch.manual_seed(0)
    cfg = tiny_hgkd_cfg(backbone=backbone, data_preprocessor=IMAGENET_PREPROCESSOR,
                        **overrides)
    cfg['neck'].pop('in_channels')  # the student's stage widths and strides by default
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    model.init_weights()
    return model


def train_step(model, size=(64, 64), batch=2):
    images = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)  # default_collate
    data = dict(inputs=images, data_samples=[DataSample() for _ in range(batch)])
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper = OptimWrapper(torch.optim.AdamW(params, lr=1e-3))
    model.train()
    return model.train_step(data, wrapper)


@pytest.mark.parametrize('teacher', TEACHERS)
@pytest.mark.parametrize('name', STUDENTS)
def test_one_training_step(name, teacher):
    model = build(STUDENTS[name], teacher=TEACHERS[teacher])
    assert model.neck.in_strides == model.backbone.out_strides
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    log_vars = train_step(model, size=(64, 96))
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    after = model.state_dict()
    stem = next(k for k in before if k.endswith('weight') and k.startswith('backbone.'))
    changed = [k for k in before if k.startswith('backbone.') and k.endswith('weight')
               and not torch.equal(before[k], after[k])]
    assert stem in changed and f'backbone.{last_weight(model)}' in changed
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key])


def last_weight(model) -> str:
    """The name of the last convolution or linear weight of the student."""
    return [name for name, module in model.backbone.named_modules()
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))][-1] + '.weight'


def test_patch_14_loss_positions_are_the_area_rule():
    """Patch 14 on a 64x96 image: a 5x7 teacher grid over 2x3 mask cells; the loss reads
    the patches that are at least half in masked cells."""
    model = build(STUDENTS['convnext'], teacher=TEACHERS['dinov2-p14'])
    model.train()
    inputs = torch.randn(2, 3, 64, 96)
    torch.manual_seed(5)
    loss = model.loss(inputs)['loss_feat']
    torch.manual_seed(5)
    mask = model.mask(inputs)
    tokens = model.teacher(inputs, mask)
    decoded = model.neck(model.extract_feat(inputs, mask), mask)
    assert decoded.shape[-2:] == tokens[0].shape[-2:] == (5, 7)
    patch_mask = model.teacher.visible_patches(mask, (64, 96))
    expected = model.head.loss(decoded, tokens, patch_mask)['loss_feat']
    torch.testing.assert_close(loss, expected)
    nearest = model.head.loss(decoded, tokens, mask)['loss_feat']  # the cell mask, resized
    assert not torch.allclose(nearest, expected)


@pytest.mark.parametrize('backbone, cell, size', [
    (dict(STUDENTS['resnet-v1c'], num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
          out_indices=(0, 1, 2), mask_cell=16), 16, (48, 80)),
    (dict(TINY_CONVNEXT, mask_cell=64), 64, (128, 192)),
    (dict(type='HGKDSparseResNet', depth=18, backend='packed', mask_cell=64), 64, (128, 192)),
], ids=['resnet-v1c-16', 'convnext-64', 'resnet-packed-64'])
def test_mask_cells_other_than_32(backbone, cell, size):
    model = build(backbone)
    mask = model.mask(torch.zeros(2, 3, *size))
    assert mask.shape == (2, size[0] // cell, size[1] // cell)
    assert torch.isfinite(train_step(model, size=size)['loss'])
    with pytest.raises(ValueError, match=f'must be a multiple of the mask cell {cell}'):
        model.mask(torch.zeros(2, 3, size[0] + cell // 2, size[1]))
