"""Masked BatchNorm against BatchNorm1d over the gathered visible positions."""
import torch

from hgkd_mm.models.sparse import MaskedBatchNorm2d, MaskPyramid


def test_masked_bn_equals_batchnorm1d_on_visible_positions():
    torch.manual_seed(0)
    mask_grid = torch.rand(4, 3, 3) > 0.5
    mask_grid[0, 0, 0] = True
    x = torch.randn(4, 8, 12, 12, dtype=torch.float64) * 3 + 1
    visible = MaskPyramid(mask_grid).at(x)
    x = x * visible

    masked = MaskedBatchNorm2d(8).double()
    reference = torch.nn.BatchNorm1d(8).double()
    with torch.no_grad():
        for bn in (masked, reference):
            bn.weight.copy_(torch.linspace(0.5, 2, 8))
            bn.bias.copy_(torch.linspace(-1, 1, 8))
    out = masked(x, visible)
    gathered = x.permute(0, 2, 3, 1)[visible[:, 0].bool()]  # (N, C)
    expected = reference(gathered)
    assert torch.allclose(out.permute(0, 2, 3, 1)[visible[:, 0].bool()], expected, atol=1e-12)
    assert out[(visible == 0).expand_as(out)].abs().max() == 0
    assert torch.allclose(masked.running_mean, reference.running_mean, atol=1e-12)
    assert torch.allclose(masked.running_var, reference.running_var, atol=1e-12)

    masked.eval(), reference.eval()
    assert torch.allclose(masked(x, visible).permute(0, 2, 3, 1)[visible[:, 0].bool()],
                          reference(gathered), atol=1e-12)
