"""FrozenViTTeacher checked against timm's ViT and MAE's decoder (timm_reference.py)."""
from typing import Dict

import pytest
import torch
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import Tensor, nn

from hgkd_mm.models.teachers.vit_teacher import PatchProjection

from helpers import random_mask
from timm_reference import (ARCH, DECODER_EMBED, DEPTH, EMBED, GRID, IMG, PATCH, TOL,
                            TimmMAEDecoder, build_teacher)


def _timm_grid(tokens: Tensor) -> Tensor:
    """timm ``(B, N, D)`` patch tokens -> ``(B, D, Ht, Wt)``."""
    return tokens.transpose(1, 2).reshape(len(tokens), -1, GRID, GRID)


@torch.no_grad()
def _mae_reference(vit: TimmViT, decoder: TimmMAEDecoder, images: Tensor,
                   visible: Tensor) -> Dict[str, Tensor]:
    """MAE's forward_encoder / forward_decoder, one sample at a time, with timm modules.

    Returns the encoder's patch tokens at visible positions (zeros elsewhere) and the
    decoder's hidden features after its norm, both as (B, D, Ht, Wt) grids.
    """
    encoder_grids, decoder_grids = [], []
    for image, keep in zip(images, visible):
        tokens = vit.patch_embed(image[None]) + vit.pos_embed[:, 1:]
        tokens = torch.cat([vit.cls_token + vit.pos_embed[:, :1], tokens[:, keep]], 1)
        tokens = vit.norm(vit.blocks(tokens))
        encoder_full = torch.zeros(1, GRID * GRID, EMBED)
        encoder_full[:, keep] = tokens[:, 1:]
        encoder_grids.append(_timm_grid(encoder_full))

        tokens = decoder.decoder_embed(tokens)
        patches = decoder.mask_token.repeat(1, GRID * GRID, 1)
        patches[:, keep] = tokens[:, 1:]
        tokens = torch.cat([tokens[:, :1], patches], 1) + decoder.decoder_pos_embed
        for block in decoder.decoder_blocks:
            tokens = block(tokens)
        decoder_grids.append(_timm_grid(decoder.decoder_norm(tokens)[:, 1:]))
    return dict(encoder=torch.cat(encoder_grids), decoder=torch.cat(decoder_grids))


def _patch_visibility(mask: Tensor) -> Tensor:
    return mask.repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)


def test_full_mode_matches_timm(files, timm_vit, images):
    teacher = build_teacher(files['timm'])
    (grid, ) = teacher(images)
    expected = _timm_grid(timm_vit.forward_features(images)[:, 1:])
    assert grid.shape == (2, EMBED, GRID, GRID)
    torch.testing.assert_close(grid, expected, **TOL)


@pytest.mark.parametrize('drop_path_rate', [0.0, 0.1])
def test_full_mode_compiles_in_one_graph(files, images, drop_path_rate):
    """mmpretrain gives each block its drop-path rate as a numpy float, on which
    torch.compile cannot branch (a graph break in every block): the teacher makes them
    Python floats, and its forward compiles whole (fullgraph) to the same tokens."""
    teacher = build_teacher(files['timm'], drop_path_rate=drop_path_rate)
    rates = [m.drop_prob for m in teacher.modules() if hasattr(m, 'drop_prob')]
    assert rates and all(type(rate) is float for rate in rates)
    assert max(rates) == pytest.approx(drop_path_rate)
    compiled = torch.compile(teacher.forward, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(images)[0], teacher(images)[0], atol=0, rtol=0)


def test_masked_mode_with_decoder_matches_mae(files, timm_vit, timm_decoder, images):
    teacher = build_teacher(files['mae'], input_mode='masked')
    assert teacher.embed_dims == DECODER_EMBED
    mask = random_mask(2, 2, 2, keep=2, seed=5)
    (grid, ) = teacher(images, mask)
    assert grid.shape == (2, DECODER_EMBED, GRID, GRID)
    reference = _mae_reference(timm_vit, timm_decoder, images, _patch_visibility(mask))
    torch.testing.assert_close(grid, reference['decoder'], **TOL)


def test_masked_mode_without_decoder(files, timm_vit, timm_decoder, images):
    teacher = build_teacher(files['timm'], input_mode='masked')
    assert teacher.decoder is None and teacher.embed_dims == EMBED
    all_visible = torch.ones(2, 2, 2, dtype=torch.bool)
    torch.testing.assert_close(teacher(images, all_visible)[0],
                               build_teacher(files['timm'])(images)[0], **TOL)

    mask = random_mask(2, 2, 2, keep=2, seed=6)
    (grid, ) = teacher(images, mask)
    reference = _mae_reference(timm_vit, timm_decoder, images, _patch_visibility(mask))
    torch.testing.assert_close(grid, reference['encoder'], **TOL)


def test_intermediate_out_layers(files, timm_vit, images):
    teacher = build_teacher(files['timm'], out_layers=(0, -1))
    first, last = teacher(images)
    tokens = timm_vit.patch_embed(images)
    tokens = torch.cat([timm_vit.cls_token.expand(2, -1, -1), tokens], 1) + timm_vit.pos_embed
    expected_first = timm_vit.blocks[0](tokens)[:, 1:]  # no final norm on inner blocks
    torch.testing.assert_close(first, _timm_grid(expected_first), **TOL)
    torch.testing.assert_close(last, _timm_grid(timm_vit.forward_features(images)[:, 1:]),
                               **TOL)


def test_teacher_stays_frozen(files, images):
    teacher = MODELS.build(dict(type='FrozenViTTeacher', arch=ARCH, img_size=IMG,
                                patch_size=PATCH, checkpoint=files['timm']))
    parent = nn.Sequential(teacher)
    parent.train()
    assert not any(module.training for module in teacher.modules())
    assert not any(param.requires_grad for param in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.init_weights()  # what a Runner does to the whole model
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    (grid, ) = teacher(images.requires_grad_())
    assert grid.grad_fn is None and not grid.requires_grad


def test_missing_file_and_bad_options(tmp_path, files):
    missing = str(tmp_path / 'nowhere.pth')
    with pytest.raises(FileNotFoundError, match='nowhere.pth.*teacher.checkpoint'):
        build_teacher(missing)
    with pytest.raises(ValueError, match='input_mode'):
        build_teacher(input_mode='partial')
    with pytest.raises(ValueError, match='out_layers'):
        build_teacher(out_layers=(DEPTH, ))
    with pytest.raises(ValueError, match='out_layers'):
        build_teacher(files['mae'], input_mode='masked', out_layers=(0, 1))
    with pytest.raises(ValueError, match='visible patches'):
        uneven = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
        build_teacher(input_mode='masked')(torch.zeros(2, 3, IMG, IMG), uneven)


@pytest.mark.parametrize('size, bias', [((32, 48), True), ((37, 50), False)])
def test_patch_projection_equals_conv2d(size, bias):
    """The patch embedding as one matrix product: torch's strided Conv2d's outputs and
    gradients, also for a size that is not a multiple of the patch (the rest is dropped)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 16, stride=16, bias=bias)
    patch = PatchProjection.from_conv(conv)
    assert type(patch) is PatchProjection
    assert patch.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(2, 3, *size, requires_grad=True)
    torch.testing.assert_close(patch.matmul_forward(x), conv(x))  # what CUDA inputs run
    grads = torch.autograd.grad(patch.matmul_forward(x).square().sum(), [x, patch.weight])
    expected = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight])
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, atol=1e-4, rtol=1e-4)  # sum order


@pytest.mark.parametrize('conv', [nn.Conv2d(3, 8, 16, stride=8),
                                  nn.Conv2d(3, 8, 4, 4, padding=1),
                                  nn.Conv2d(4, 8, 4, 4, groups=2)])
def test_other_convolutions_are_kept(conv):
    assert PatchProjection.from_conv(conv) is conv


def test_teacher_embeds_patches_by_matrix_product(files, images, monkeypatch):
    """On CUDA inputs (faked) the teacher's patch embedding is the matrix product, and
    its tokens are the convolution's."""
    teacher = build_teacher(files['timm'])
    assert type(teacher.vit.patch_embed.projection) is PatchProjection
    assert 'vit.patch_embed.projection.weight' in teacher.state_dict()
    expected = teacher(images)[0]  # the CPU runs the convolution
    calls = []
    real = PatchProjection.matmul_forward
    monkeypatch.setattr(PatchProjection, 'forward',
                        lambda self, x: calls.append(x.shape) or real(self, x))
    torch.testing.assert_close(teacher(images)[0], expected, **TOL)
    assert calls == [images.shape]


def test_building_the_teacher_draws_what_mmpretrain_draws():
    """The patch projection swap draws nothing from the RNG: the inits after the teacher
    (the student's) are those of a plain mmpretrain VisionTransformer build."""
    from mmpretrain.models.backbones import VisionTransformer
    torch.manual_seed(0)
    build_teacher()
    after_teacher = torch.rand(4)
    torch.manual_seed(0)
    VisionTransformer(ARCH, img_size=IMG, patch_size=PATCH, out_type='featmap',
                      final_norm=True, with_cls_token=True)
    assert torch.equal(after_teacher, torch.rand(4))
