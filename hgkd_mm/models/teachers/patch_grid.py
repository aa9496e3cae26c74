"""The teacher's patch grid against the student's mask cells.

mmpretrain's ViT pads an image to whole patches (bottom and right), so an ``H x W`` image
gives a ``ceil(H/p) x ceil(W/p)`` grid. When the patch size ``p`` does not divide the mask
cell (patch 14, cell 32), a patch can straddle visible and masked cells. The rule used for
the loss: **a patch is masked (a loss position) when at least half of its area inside the
image lies in masked cells**; it is visible otherwise. When ``p`` divides the cell every
patch lies in one cell and the rule is exact.
"""
import math
from typing import Tuple

import torch
from torch import Tensor


def teacher_grid(image_hw: Tuple[int, int], patch_size: int) -> Tuple[int, int]:
    """``(ceil(H / p), ceil(W / p))``."""
    return tuple(math.ceil(size / patch_size) for size in image_hw)


def _overlaps(size: int, patch_size: int, cells: int, device) -> Tensor:
    """``(num_patches, cells)``: pixels of each patch (clipped to the image) in each cell
    along one axis of length ``size`` cut into ``cells`` equal cells."""
    cell = size // cells
    patch_start = torch.arange(math.ceil(size / patch_size), device=device) * patch_size
    patch_end = (patch_start + patch_size).clamp_max(size)
    cell_start = torch.arange(cells, device=device) * cell
    return (torch.minimum(patch_end[:, None], cell_start[None] + cell)
            - torch.maximum(patch_start[:, None], cell_start[None])).clamp_min(0)


def visible_patches(mask: Tensor, image_hw: Tuple[int, int], patch_size: int) -> Tensor:
    """The mask on the teacher's grid by area (module docstring).

    Args:
        mask: ``(B, h, w)`` bool, True = visible, one entry per ``H/h x W/w`` cell.
        image_hw: ``(H, W)``, multiples of ``h`` and ``w``.
        patch_size: the teacher's patch size ``p``.

    Returns:
        ``(B, ceil(H/p), ceil(W/p))`` bool, True = visible.
    """
    (height, width), (h, w) = image_hw, mask.shape[-2:]
    if height % h or width % w:
        raise ValueError(f'image size {height}x{width} is not a multiple of the mask grid '
                         f'{h}x{w}')
    cell_h, cell_w = height // h, width // w
    if cell_h % patch_size == 0 and cell_w % patch_size == 0:
        # every patch lies in one cell: the same rule, two ops in the training step
        return (mask.repeat_interleave(cell_h // patch_size, 1)
                .repeat_interleave(cell_w // patch_size, 2))
    rows = _overlaps(height, patch_size, h, mask.device).float()  # (Ht, h)
    cols = _overlaps(width, patch_size, w, mask.device).float()  # (Wt, w)
    masked_area = rows @ (~mask).float() @ cols.T  # (B, Ht, Wt)
    area = rows.sum(1)[:, None] * cols.sum(1)[None]
    return masked_area * 2 < area
