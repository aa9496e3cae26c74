"""The HGKD algorithm: gradients, learning, checkpoints without the teacher, bad options."""
import pytest
import torch
from mmengine.registry import DefaultScope

from mmpretrain.registry import MODELS

import hgkd_mm  # noqa: F401

from helpers import TINY_VIT, tiny_hgkd_cfg


# no normalisation: the tests feed standard-normal images
IDENTITY_PREPROCESSOR = dict(type='SelfSupDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1])


def build(**overrides):
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(tiny_hgkd_cfg(**{'data_preprocessor': IDENTITY_PREPROCESSOR,
                                              **overrides}))
    model.init_weights()
    return model


def test_gradients_reach_student_never_teacher():
    model = build()
    model.train()
    assert not model.teacher.training
    losses = model.loss(torch.randn(2, 3, 64, 64))
    assert set(losses) == {'loss_feat'}
    losses['loss_feat'].backward()
    student = [model.backbone, model.neck, model.head]
    for module in student:
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in model.teacher.named_parameters():
        assert not p.requires_grad and p.grad is None, name


def test_loss_falls_on_fixed_data():
    model = build()
    model.train()
    inputs = torch.randn(2, 3, 64, 64)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(40):
        loss = model.loss(inputs)['loss_feat']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.7 * first, history


def test_sim_term_is_optional_and_finite():
    model = build(head=dict(type='HGKDDistillHead', sim=dict(queue_size=16)))
    model.train()
    losses = model.loss(torch.randn(2, 3, 64, 64))
    assert set(losses) == {'loss_feat', 'loss_sim'}
    assert torch.isfinite(losses['loss_sim'])
    losses['loss_sim'].backward()
    assert model.head.proj.weight.grad is not None


def test_masks_are_per_sample_with_fixed_ratio():
    model = build(mask_ratio=0.6)
    mask = model.mask(torch.zeros(8, 3, 160, 160))
    assert mask.shape == (8, 5, 5) and mask.dtype == torch.bool
    assert (mask.flatten(1).sum(1) == 10).all()
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1


def test_checkpoint_holds_student_only_and_loads_strictly():
    model = build()
    state = model.state_dict()
    assert not any(k.startswith('target_generator.') for k in state)
    assert any(k.startswith('backbone.layer4') for k in state)
    other = build()
    other.load_state_dict(state, strict=True)
    for key, value in state.items():
        assert torch.equal(other.state_dict()[key], value)


@pytest.mark.parametrize('ratio', [0, 1, 1.5, -0.1])
def test_bad_mask_ratio(ratio):
    with pytest.raises(ValueError, match='mask_ratio'):
        build(mask_ratio=ratio)


def test_input_not_multiple_of_32():
    model = build()
    with pytest.raises(ValueError, match='multiple of the mask cell 32'):
        model.loss(torch.randn(1, 3, 80, 64))


def test_teacher_patch_and_decoder_stride_must_fit():
    with pytest.raises(ValueError, match=r'out_stride=64 .* must be in \(0, 32\]'):
        build(teacher=dict(type='FrozenViTTeacher', arch=TINY_VIT, img_size=64, patch_size=64))
    with pytest.raises(ValueError, match='out_stride'):
        build(neck=dict(type='HGKDUNetDecoder', in_channels=(64, 128, 256, 512), channels=64,
                        out_stride=32))


def test_mask_ratio_that_masks_no_cell_is_refused():
    model = build(mask_ratio=0.1)  # 2x2 grid at 64 px: round(4 * 0.9) = 4 visible
    with pytest.raises(ValueError, match=r'mask_ratio=0.1 masks no cell of the 2x2 .* above 0.125'):
        model.loss(torch.randn(2, 3, 64, 64))
    model.loss(torch.randn(2, 3, 128, 128))  # 4x4 grid: 14 of 16 visible


@pytest.mark.parametrize('depth, widths', [(18, (64, 128, 256, 512)),
                                           (50, (256, 512, 1024, 2048))])
def test_neck_in_channels_default_to_the_student_widths(depth, widths):
    model = build(backbone=dict(type='HGKDSparseResNet', depth=depth),
                  neck=dict(type='HGKDUNetDecoder', channels=64))
    assert tuple(norm.num_features for norm in model.neck.densify_norms) == tuple(
        widths[i] for i in model.neck.used)
    assert torch.isfinite(model.loss(torch.randn(2, 3, 64, 64))['loss_feat'])


def test_masked_teacher_checkpoint_without_mae_decoder_is_refused(tmp_path):
    from mmpretrain.models.backbones import VisionTransformer
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        vit = VisionTransformer(TINY_VIT, img_size=64, patch_size=16, out_type='featmap')
    path = tmp_path / 'encoder_only.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in vit.state_dict().items()}}, path)
    teacher = dict(type='FrozenViTTeacher', arch=TINY_VIT, img_size=64, patch_size=16,
                   input_mode='masked', checkpoint=str(path))
    with pytest.raises(ValueError, match=f"needs the MAE decoder in teacher.checkpoint \\({path}"):
        build(teacher=teacher)
    build(teacher=dict(teacher, input_mode='full'))


def test_one_visible_value_per_channel_is_refused_in_training():
    model = build(mask_ratio=0.75)  # 2x2 grid at 64 px: 1 visible cell per sample
    with pytest.raises(ValueError, match='batch 1 with 1 visible stride-32 cell'):
        model.loss(torch.randn(1, 3, 64, 64))
    model.loss(torch.randn(2, 3, 64, 64))
    model.eval()
    model.loss(torch.randn(1, 3, 64, 64))  # running statistics: any batch


def test_channels_last_student_has_channels_last_weights_and_the_same_loss():
    dense, channels_last = build(), build(channels_last=True)
    weight = channels_last.backbone.layer1[0].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.ndim == 4
    channels_last.load_state_dict(dense.state_dict())  # same values, layouts kept
    # the random teachers differ (the student's init draws in another order), and they
    # are not in the checkpoint
    channels_last.teacher.load_state_dict(dense.teacher.state_dict())
    assert weight.is_contiguous(memory_format=torch.channels_last)
    inputs = torch.randn(2, 3, 64, 64)
    losses = []
    for model in (dense, channels_last):
        torch.manual_seed(3)  # same masks
        losses.append(model.loss(inputs)['loss_feat'])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
