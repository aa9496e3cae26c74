"""PackedLayout, the gather and scatter of the packed backend: visible cells round-trip, in
either memory format, with no copy of a map and the mask as the gradient."""
import pytest
import torch

from hgkd_mm.models.sparse import PackedLayout

from helpers import random_mask


def test_layout_round_trip_keeps_visible_positions():
    mask = random_mask(2, 2, 3, keep=2)
    layout = PackedLayout(mask, num_visible=2)
    x = torch.randn(2, 5, 16, 24)
    packed = layout.gather(x)
    assert packed.shape == (2, 5, 2 * 8, 8)
    visible = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None]
    assert torch.equal(layout.scatter(packed), x * visible)
    channels_last = PackedLayout(mask, num_visible=2, channels_last=True)
    tiles = channels_last.gather(x.contiguous(memory_format=torch.channels_last))
    assert tiles.is_contiguous(memory_format=torch.channels_last) and torch.equal(tiles, packed)
    dense = channels_last.scatter(tiles)
    assert dense.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(dense, x * visible)


@pytest.mark.parametrize('channels_last', [False, True])
def test_gather_and_scatter_copy_nothing(channels_last):
    """Forward and backward of a gather + scatter move each value once: no copy of a map
    (a scatter into a transposed view made autograd copy the dense gradient twice), and
    the gradient is the mask."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ in ('copy_', 'clone', '_to_copy', 'contiguous'):
                self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    mask = random_mask(2, 2, 3, keep=2)
    layout = PackedLayout(mask, num_visible=2, channels_last=channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, 16, 24).contiguous(memory_format=memory_format).requires_grad_()
    with Copies() as copies:
        dense = layout.scatter(layout.gather(x))
        dense.backward(torch.ones_like(dense))
    assert copies.ops == []
    visible = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None]
    assert torch.equal(x.grad, visible.expand_as(x).to(x.dtype))
