"""Visible positions packed into tiles ("packed" backend).

Every sample keeps the same number ``k`` of visible cells of the stride-32 grid. At a
resolution where one cell is ``f x f`` positions, the visible positions of a feature map
``(B, C, H, W)`` are packed as ``(B, C, k * f, f)``: the ``f x f`` tiles of the visible
cells stacked along the height. On such a tensor

- a 1x1 convolution without padding is the sparse convolution itself, and its stride
  samples each tile (``f`` stays a multiple of the stride in a ResNet);
- ``BatchNorm2d`` computes its statistics over exactly the visible positions;
- elementwise ops touch ``k / (h w)`` of the dense map (0.4 at mask ratio 0.6).

Other convolutions and pools see neighbours across cells: they scatter to the dense map
(zeros where masked), run dense, and gather the visible outputs again.
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor


class PackedLayout:
    """Gather and scatter between dense feature maps and their packed visible tiles.

    Args:
        mask_grid (Tensor): ``(B, h, w)`` bool, True = visible.
        num_visible (int, optional): visible cells per sample. Given, it is checked on the
            device (no host synchronisation); None: counted on the host.
        channels_last (bool): gather to channels-last tiles and scatter to channels-last
            dense maps.
    """

    def __init__(self, mask_grid: Tensor, num_visible: Optional[int] = None,
                 channels_last: bool = False):
        batch, h, w = mask_grid.shape
        flat = mask_grid.flatten(1)
        given = num_visible is not None
        if not given:
            counts = set(flat.sum(1).tolist())
            if len(counts) != 1:
                raise ValueError("backend='packed' needs the same number of visible cells in "
                                 f'every sample of the mask, got {sorted(counts)}')
            num_visible = counts.pop()
        if not 0 < num_visible <= h * w:
            raise ValueError(f'num_visible must be in [1, {h * w}], got {num_visible}')
        if given:  # checked on the device: the host does not wait for it
            torch._assert_async(torch.all(flat.sum(1) == num_visible),
                                f"backend='packed': every sample of the mask must have "
                                f'num_visible={num_visible} visible cells')
        # the visible cells of each sample, in grid order
        self.cells = flat.to(torch.uint8).argsort(dim=1, descending=True,
                                                  stable=True)[:, :num_visible]
        self.grid = (h, w)
        self.channels_last = channels_last
        self._index: Dict[Tuple[int, int], Tensor] = {}

    def tile(self, size: Tuple[int, int]) -> int:
        """The side ``f`` of one cell at the dense ``size``."""
        (h, w), (height, width) = self.grid, size
        if height % h or width % w or height // h != width // w:
            raise ValueError(f'feature size {tuple(size)} is not a square multiple of the mask '
                             f'grid {self.grid}')
        return height // h

    def index(self, size: Tuple[int, int]) -> Tensor:
        """``(B, 1, k f f)``: the flat dense position of each packed position."""
        size = tuple(size)
        if size not in self._index:
            f, width = self.tile(size), size[1]
            offsets = torch.arange(f, device=self.cells.device)
            rows = (self.cells // self.grid[1])[:, :, None, None] * f + offsets[:, None]
            cols = (self.cells % self.grid[1])[:, :, None, None] * f + offsets
            self._index[size] = (rows * width + cols).flatten(1)[:, None]
        return self._index[size]

    def gather(self, x: Tensor) -> Tensor:
        """Dense ``(B, C, H, W)`` -> packed ``(B, C, k f, f)`` (channels-last with
        ``channels_last``)."""
        batch, channels, height, width = x.shape
        index = self.index((height, width))  # checks the size
        if self.channels_last:  # gather whole rows of channels: (B, n, C)
            packed = x.flatten(2).transpose(1, 2).gather(
                1, index.transpose(1, 2).expand(batch, -1, channels)).transpose(1, 2)
        else:
            packed = x.flatten(2).gather(2, index.expand(batch, channels, -1))
        return packed.view(batch, channels, -1, width // self.grid[1])

    def dense_size(self, x: Tensor) -> Tuple[int, int]:
        """The dense ``(H, W)`` of the packed ``x`` ``(B, C, k f, f)``."""
        return self.grid[0] * x.shape[-1], self.grid[1] * x.shape[-1]

    def scatter(self, x: Tensor) -> Tensor:
        """Packed ``(B, C, k f, f)`` -> dense ``(B, C, h f, w f)``, zero where masked."""
        batch, channels = x.shape[:2]
        size = self.dense_size(x)
        index = self.index(size)
        if self.channels_last:  # scatter whole rows of channels into (B, H W, C); not into
            # a transposed view, which costs two copies of the map in the backward
            rows = index.transpose(1, 2).expand(batch, -1, channels)
            dense = x.new_zeros(batch, size[0] * size[1], channels)
            dense.scatter_(1, rows, x.flatten(2).transpose(1, 2))
            return dense.transpose(1, 2).view(batch, channels, *size)
        dense = x.new_zeros(batch, channels, size[0] * size[1])
        dense.scatter_(2, index.expand(batch, channels, -1), x.flatten(2))
        return dense.view(batch, channels, *size)
