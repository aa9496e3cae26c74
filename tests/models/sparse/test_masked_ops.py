"""Masked BatchNorm against BatchNorm1d over the gathered visible positions."""
import torch

from hgkd_mm.models.sparse import MaskedBatchNorm2d, MaskPyramid


def masked_and_reference(channels):
    """A float64 MaskedBatchNorm2d and a BatchNorm1d with the same affine parameters."""
    masked = MaskedBatchNorm2d(channels).double()
    reference = torch.nn.BatchNorm1d(channels).double()
    with torch.no_grad():
        for bn in (masked, reference):
            bn.weight.copy_(torch.linspace(0.5, 2, channels))
            bn.bias.copy_(torch.linspace(-1, 1, channels))
    return masked, reference


def test_masked_bn_equals_batchnorm1d_on_visible_positions():
    torch.manual_seed(0)
    mask_grid = torch.rand(4, 3, 3) > 0.5
    mask_grid[0, 0, 0] = True
    x = torch.randn(4, 8, 12, 12, dtype=torch.float64) * 3 + 1
    visible = MaskPyramid(mask_grid).at(x)
    x = x * visible

    masked, reference = masked_and_reference(8)
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


def test_masked_bn_gradients_equal_batchnorm1d_on_visible_positions():
    """The hand-written backward against autograd through torch's own BatchNorm."""
    torch.manual_seed(1)
    mask_grid = torch.rand(3, 2, 2) > 0.4
    mask_grid[:, 0, 0] = True
    visible = MaskPyramid(mask_grid).at(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    keep = visible[:, 0].bool()
    x = (torch.randn(3, 5, 8, 8, dtype=torch.float64) * 2 - 1) * visible
    upstream = torch.randn(3, 5, 8, 8, dtype=torch.float64)

    masked, reference = masked_and_reference(5)
    x_masked = x.clone().requires_grad_()
    (masked(x_masked, visible) * upstream).sum().backward()
    x_ref = x.clone().requires_grad_()
    out_ref = reference(x_ref.permute(0, 2, 3, 1)[keep])
    (out_ref * upstream.permute(0, 2, 3, 1)[keep]).sum().backward()

    assert torch.allclose(x_masked.grad, x_ref.grad, atol=1e-12)  # zero where masked in both
    assert torch.allclose(masked.weight.grad, reference.weight.grad, atol=1e-12)
    assert torch.allclose(masked.bias.grad, reference.bias.grad, atol=1e-12)
