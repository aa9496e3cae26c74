"""Teachers beyond MAE ViT-B: every mmpretrain VisionTransformer arch, timm's DINOv2 with and
without registers (LayerScale) and the official DINOv2 release, any input size, and the
area rule for patches that do not divide the mask cell."""
import pytest
import timm
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer

from helpers import random_mask

from hgkd_mm.models.teachers import FrozenViTTeacher, load_state_dict_strict, visible_patches
from hgkd_mm.models.teachers.patch_grid import teacher_grid


@pytest.mark.parametrize('arch', sorted(VisionTransformer.arch_zoo))
def test_every_mmpretrain_arch_loads_strictly(arch):
    """On the meta device: the giant archs cost no memory."""
    with torch.device('meta'):
        teacher = FrozenViTTeacher(arch, img_size=224, patch_size=16)
        reference = VisionTransformer(arch, img_size=224, patch_size=16, out_type='featmap')
    load_state_dict_strict(teacher.vit, reference.state_dict(), f'{arch}.pth')
    assert teacher.embed_dims == VisionTransformer.arch_zoo[arch]['embed_dims']


def test_mmpretrain_arch_tokens_any_input_size(tmp_path):
    torch.manual_seed(0)
    reference = VisionTransformer('deit-tiny', img_size=64, patch_size=16, out_type='featmap',
                                  drop_path_rate=0.1)
    reference.eval()
    path = tmp_path / 'deit-tiny.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in reference.state_dict().items()}},
               path)
    teacher = FrozenViTTeacher('deit-tiny', img_size=64, patch_size=16, checkpoint=str(path))
    for size in ((64, 64), (96, 64), (64, 112)):  # pos_embed interpolated, as mmpretrain
        images = torch.randn(2, 3, *size)
        torch.testing.assert_close(teacher(images)[0], reference(images)[0])


def perturbed(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Every weight off its init (zero tokens, unit LayerScale) so wrong keys show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=g))
    return model.eval()


DEPTH = 3  # of the 12 blocks: enough to check every key, and fast


def timm_dinov2(name: str, img_size: int):
    torch.manual_seed(0)
    return perturbed(timm.create_model(name, pretrained=False, img_size=img_size,
                                       dynamic_img_size=True, depth=DEPTH))


def timm_tokens(model, images):
    """timm's patch tokens after the final norm as a ``(B, D, Ht, Wt)`` grid, computed in
    float64 (the perturbed weights make large activations, whose float32 rounding the final
    norm would amplify), like the teachers they are compared with."""
    with torch.no_grad():
        tokens = model.double().forward_features(images)[:, model.num_prefix_tokens:]
    grid = (images.shape[-2] // 14, images.shape[-1] // 14)
    return tokens.unflatten(1, grid).permute(0, 3, 1, 2)


DINOV2 = {  # the archs 'dinov2-s' and 'base' with DEPTH blocks
    'vit_small_patch14_dinov2': dict(arch=dict(VisionTransformer.arch_zoo['dinov2-s'],
                                               num_layers=DEPTH)),
    'vit_base_patch14_reg4_dinov2': dict(arch=dict(VisionTransformer.arch_zoo['base'],
                                                   num_layers=DEPTH),
                                         num_register_tokens=4, pos_embed_prefix=False),
}
TOL = dict(atol=1e-5, rtol=1e-5)  # the teacher returns float32


def dinov2_teacher(path: str, name: str, **kwargs) -> FrozenViTTeacher:
    return FrozenViTTeacher(img_size=112, patch_size=14, layer_scale_init_value=1e-5,
                            checkpoint=path, **DINOV2[name], **kwargs).double()


@pytest.mark.parametrize('name', DINOV2)
def test_timm_dinov2_state_dict(name, tmp_path):
    model = timm_dinov2(name, img_size=112)
    path = str(tmp_path / f'{name}.pth')
    torch.save(model.state_dict(), path)
    teacher = dinov2_teacher(path, name, interpolate_antialias=True)
    # the training size, and others (pos_embed resized as timm does)
    for size in ((112, 112), (140, 168), (84, 112)):
        images = torch.randn(1, 3, *size, dtype=torch.float64)
        expected = timm_tokens(model, images)
        torch.testing.assert_close(teacher(images)[0], expected.float(), **TOL)


def test_official_dinov2_release_with_registers(tmp_path):
    """The official file: ``register_tokens``, a position embedding with a class entry that
    the registers do not get, and DINOv2's ``mask_token``; it gives timm's tokens."""
    model = timm_dinov2('vit_base_patch14_reg4_dinov2', img_size=112)
    state = dict(model.state_dict())
    class_pos = state['cls_token'] / 2  # exact in float32, as cls_token - class_pos
    state['pos_embed'] = torch.cat([class_pos, state['pos_embed']], 1)
    state['cls_token'] = state['cls_token'] - class_pos
    state['register_tokens'] = state.pop('reg_token')
    state['mask_token'] = torch.zeros(1, state['cls_token'].shape[-1])
    path = str(tmp_path / 'dinov2_vitb14_reg4_pretrain.pth')
    torch.save(state, path)
    teacher = dinov2_teacher(path, 'vit_base_patch14_reg4_dinov2')
    images = torch.randn(1, 3, 112, 112, dtype=torch.float64)
    expected = timm_tokens(model, images)
    torch.testing.assert_close(teacher(images)[0], expected.float(), **TOL)


def test_dinov2_options_missing_are_named(tmp_path):
    model = timm_dinov2('vit_base_patch14_reg4_dinov2', img_size=112)
    path = str(tmp_path / 'reg4.pth')
    torch.save(model.state_dict(), path)
    arch = DINOV2['vit_base_patch14_reg4_dinov2']['arch']
    with pytest.raises(RuntimeError) as error:
        FrozenViTTeacher(arch, img_size=112, patch_size=14, checkpoint=path)
    message = str(error.value)
    assert path in message
    assert 'teacher.layer_scale_init_value > 0' in message
    assert 'teacher.num_register_tokens' in message
    assert 'teacher.pos_embed_prefix=False' in message
    assert 'unexpected keys' in message and 'layers.0.attn.gamma1.weight' in message
    with pytest.raises(RuntimeError, match='img_size must be the checkpoint'):
        FrozenViTTeacher(arch, img_size=224, patch_size=14, layer_scale_init_value=1e-5,
                         num_register_tokens=4, pos_embed_prefix=False, checkpoint=path)


def area_reference(mask, image_hw, patch):
    """Masked area per patch from the pixels: the mask at pixel resolution, padded to whole
    patches, averaged over each patch's pixels inside the image."""
    cell = image_hw[0] // mask.shape[1]
    pixels = (~mask)[:, None].float().repeat_interleave(cell, 2).repeat_interleave(cell, 3)
    inside = torch.ones_like(pixels)
    pad = [0, -image_hw[1] % patch, 0, -image_hw[0] % patch]
    masked = F.avg_pool2d(F.pad(pixels, pad), patch)
    area = F.avg_pool2d(F.pad(inside, pad), patch)
    return (masked / area)[:, 0] < 0.5


@pytest.mark.parametrize('image_hw, cell, patch', [((224, 224), 32, 14), ((224, 320), 32, 14),
                                                   ((192, 128), 64, 16), ((96, 160), 32, 16),
                                                   ((112, 112), 16, 14)])
def test_visible_patches_by_area(image_hw, cell, patch):
    mask = random_mask(3, image_hw[0] // cell, image_hw[1] // cell, keep=2)
    got = visible_patches(mask, image_hw, patch)
    assert torch.equal(got, area_reference(mask, image_hw, patch))
    if cell % patch == 0:  # every patch in one cell: the cell's visibility
        factor = cell // patch
        expected = mask.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
        assert torch.equal(got, expected)


def test_patch_grid_of_any_size_and_a_mask_grid_that_does_not_divide_the_image():
    assert teacher_grid((224, 230), 14) == (16, 17)  # the last patch padded
    with pytest.raises(ValueError, match='image size 224x230 is not a multiple of the mask '
                                         'grid 7x7'):
        visible_patches(torch.ones(1, 7, 7, dtype=torch.bool), (224, 230), 14)


def test_visible_patches_worked_example():
    """224 px, 32-pixel cells, patch 14, only the top-left cell masked: patches (0, 0),
    (0, 1), (1, 0), (1, 1) lie inside it; patch (2, 2) has 4x4 of its 14x14 pixels there and
    (1, 2) 14x4: both visible."""
    mask = torch.ones(1, 7, 7, dtype=torch.bool)
    mask[0, 0, 0] = False
    masked = ~visible_patches(mask, (224, 224), 14)[0]
    assert masked.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_masked_input_mode_with_register_tokens():
    """MAE-style masked input (no decoder): with every cell visible it is the full forward;
    otherwise the masked patches carry zeros and the visible ones still see the registers."""
    torch.manual_seed(0)
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    options = dict(img_size=56, patch_size=14, layer_scale_init_value=1e-5,
                   num_register_tokens=4, pos_embed_prefix=False)
    full = perturbed(FrozenViTTeacher(arch, **options))
    masked = FrozenViTTeacher(arch, input_mode='masked', **options)
    masked.load_state_dict(full.state_dict())
    images = torch.randn(2, 3, 112, 112)  # an 8x8 patch grid on 4x4 cells of 28 px
    all_visible = torch.ones(2, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(masked(images, all_visible)[0], full(images)[0])
    mask = random_mask(2, 4, 4, keep=6)
    tokens = masked(images, mask)[0]
    hidden = ~mask.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert not (tokens * hidden[:, None]).any() and (tokens * ~hidden[:, None]).abs().sum() > 0
    with torch.no_grad():
        masked.vit.register_tokens.add_(1.0)
    assert not torch.allclose(masked(images, mask)[0], tokens)
