"""HGKDUNetDecoder: densify against a gather-BatchNorm1d-scatter reference, output at the
teacher grid, masked inputs never reach the output, bad options named."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hgkd_mm.models.necks import HGKDUNetDecoder
from hgkd_mm.models.sparse import MaskPyramid

IN_CHANNELS = (4, 6, 8, 10)
STRIDES = (4, 8, 16, 32)


def decoder(**kwargs) -> HGKDUNetDecoder:
    torch.manual_seed(0)
    neck = HGKDUNetDecoder(in_channels=IN_CHANNELS, channels=5, **kwargs).double()
    neck.init_weights()
    with torch.no_grad():  # non-trivial affine norms
        for norm in neck.densify_norms:
            norm.weight.normal_()
            norm.bias.normal_()
    return neck.train()


def inputs(batch: int = 3, size: int = 128):
    torch.manual_seed(1)
    features = tuple(torch.randn(batch, c, size // s, size // s, dtype=torch.float64)
                     for c, s in zip(IN_CHANNELS, STRIDES))
    mask = torch.rand(batch, size // 32, size // 32) > 0.5
    mask[:, 0, 0] = True  # every sample keeps a visible cell
    return features, mask


def upsample(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """``(B, h, w)`` stride-32 mask -> ``(B, h * 32/stride, ...)``."""
    factor = 32 // stride
    return mask.repeat_interleave(factor, 1).repeat_interleave(factor, 2)


@pytest.mark.parametrize('j', [0, 1])  # 1x1 projection at stride 32, 3x3 at stride 16
def test_densify_matches_reference(j):
    neck = decoder()
    features, mask = inputs()
    stage = neck.used[j]
    feature = features[stage]
    visible = upsample(mask, STRIDES[stage])

    norm = neck.densify_norms[j]
    reference_norm = nn.BatchNorm1d(feature.shape[1], eps=norm.eps).double().train()
    reference_norm.load_state_dict(
        {k: v for k, v in norm.state_dict().items() if k in reference_norm.state_dict()})
    rows = reference_norm(feature.permute(0, 2, 3, 1)[visible])  # visible positions only
    filled = neck.mask_tokens[j].detach().view(1, 1, 1, -1).expand(
        *visible.shape, feature.shape[1]).clone()
    filled[visible] = rows
    projection = neck.projections[j]
    expected = F.conv2d(filled.permute(0, 3, 1, 2), projection.weight, projection.bias,
                        padding=projection.padding)

    actual = neck.densify(j, feature, MaskPyramid(mask))
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('out_stride, used', [(16, [3, 2]), (8, [3, 2, 1]), (32, [3])])
def test_stops_at_the_teacher_grid(out_stride, used):
    neck = decoder(out_stride=out_stride)
    features, mask = inputs(size=128)
    assert neck.used == used
    assert neck(features, mask).shape == (3, 5, 128 // out_stride, 128 // out_stride)


def test_masked_inputs_do_not_reach_the_output():
    neck = decoder(out_stride=8)
    features, mask = inputs()
    expected = neck(features, mask)
    changed = tuple(f + 100 * torch.randn_like(f) * ~upsample(mask, s)[:, None]
                    for f, s in zip(features, STRIDES))
    torch.testing.assert_close(neck(changed, mask), expected, rtol=0, atol=0)
    changed_visible = tuple(f + torch.randn_like(f) * upsample(mask, s)[:, None]
                            for f, s in zip(features, STRIDES))
    assert not torch.allclose(neck(changed_visible, mask), expected)


@pytest.mark.parametrize('size, out_stride, grid', [((224, 224), 14, (16, 16)),
                                                     ((224, 320), 14, (16, 23)),
                                                     ((96, 160), 16, (6, 10))])
def test_resized_onto_a_teacher_grid_off_the_student_strides(size, out_stride, grid):
    """Patch 14: decoded at stride 16, then resized bilinearly to ceil(H/14) x ceil(W/14)
    (mmpretrain's ViT pads the image to whole patches)."""
    neck = decoder(out_stride=out_stride)
    features = tuple(torch.randn(2, c, size[0] // s, size[1] // s, dtype=torch.float64)
                     for c, s in zip(IN_CHANNELS, STRIDES))
    mask = torch.rand(2, size[0] // 32, size[1] // 32) > 0.5
    assert neck.used == [3, 2]
    out = neck(features, mask)
    assert out.shape == (2, 5, *grid)
    if out_stride == 14:
        neck.out_stride = 16  # the same decoder without the resize
        at_16 = neck(features, mask)
        expected = F.interpolate(at_16, size=grid, mode='bilinear', align_corners=False)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize('strides, out_stride, used, factors', [
    ((2, 4, 8, 16, 32), 16, [4, 3], [2]),  # the stride-2 and -4 stages are left out
    ((2, 4, 8, 16, 32), 8, [4, 3, 2], [2, 2]),
    ((8, 32), 8, [1, 0], [4]),  # one x4 step
    ((4, 8, 32), 16, [2], []),  # no stage at 16: decoded at 32, resized
])
def test_any_stage_strides(strides, out_stride, used, factors):
    channels = tuple(range(4, 4 + len(strides)))
    neck = HGKDUNetDecoder(in_channels=channels, in_strides=strides, out_stride=out_stride,
                           channels=5).double()
    features = tuple(torch.randn(2, c, 128 // s, 128 // s, dtype=torch.float64)
                     for c, s in zip(channels, strides))
    mask = torch.rand(2, 4, 4) > 0.5
    assert neck.used == used
    assert [up.stride[0] for up in neck.upsamples] == factors
    size = 128 // out_stride
    assert neck(features, mask).shape == (2, 5, size, size)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r'neck.out_stride=64 .* must be in \(0, 32\]'):
        HGKDUNetDecoder(out_stride=64)
    with pytest.raises(ValueError, match='stride 32 is not a multiple of the next finer '
                       'stride 24'):
        HGKDUNetDecoder(in_channels=(4, 6), in_strides=(24, 32), out_stride=16)
    with pytest.raises(ValueError, match='neck.in_channels and neck.in_strides'):
        HGKDUNetDecoder(in_channels=(256, 512), in_strides=(4, 8, 16))
    neck = decoder()
    features, mask = inputs()
    with pytest.raises(ValueError, match=r'backbone.out_indices=\(0, 1, 2, 3\)'):
        neck(features[2:], mask)
