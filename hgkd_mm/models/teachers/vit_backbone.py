"""The teacher's ViT: mmpretrain's ``VisionTransformer`` plus the token layout of timm's
DINOv2 models (register tokens, a position embedding for the patches only)."""
from typing import Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn


class TeacherViT(VisionTransformer):
    """``VisionTransformer`` (with the class token) whose token sequence is
    ``[class, registers..., patches...]`` as in timm.

    Args:
        num_register_tokens (int): learned register tokens after the class token (timm's
            ``reg_tokens``, 4 in ``vit_base_patch14_reg4_dinov2``); default 0.
        pos_embed_prefix (bool): the position embedding has entries for the class and
            register tokens (mmpretrain, timm's default, DINOv2 without registers;
            default) or for the patches only (timm's ``no_embed_class``, DINOv2 with
            registers).
        interpolate_antialias (bool): resize the position embedding to another patch grid
            with ``F.interpolate(antialias=True)``, as timm does, instead of without, as
            mmpretrain does (default). The two differ for bicubic resizing, also upwards
            (the antialiased kernel is PIL's).
        *args, **kwargs: ``VisionTransformer``'s.

    The patch part of the position embedding is resized to any input's patch grid
    (``interpolate_mode``, bicubic by default).
    """

    def __init__(self, *args, num_register_tokens: int = 0, pos_embed_prefix: bool = True,
                 interpolate_antialias: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if not (isinstance(num_register_tokens, int) and num_register_tokens >= 0):
            raise ValueError('teacher num_register_tokens must be an int >= 0, got '
                             f'{num_register_tokens!r}')
        self.num_register_tokens = num_register_tokens
        self.pos_embed_prefix = pos_embed_prefix
        self.interpolate_antialias = interpolate_antialias
        # the tokens before the patches (VisionTransformer._format_output drops them)
        self.num_extra_tokens = 1 + num_register_tokens
        if num_register_tokens:
            self.register_tokens = nn.Parameter(
                torch.zeros(1, num_register_tokens, self.embed_dims))
        if not pos_embed_prefix or num_register_tokens:
            num_patches = self.patch_resolution[0] * self.patch_resolution[1]
            self.pos_embed = nn.Parameter(torch.zeros(
                1, num_patches + (self.num_extra_tokens if pos_embed_prefix else 0),
                self.embed_dims))

    def position_embedding(self, grid_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """``(prefix (1, P, D), patches (1, Ht*Wt, D))``: the class and register tokens with
        their positions, and the position embedding of an ``Ht x Wt`` patch grid."""
        with_prefix = self.num_extra_tokens if self.pos_embed_prefix else 0
        if self.interpolate_antialias and tuple(grid_hw) != tuple(self.patch_resolution):
            grid = self.pos_embed[:, with_prefix:].unflatten(1, self.patch_resolution)
            grid = F.interpolate(grid.permute(0, 3, 1, 2).float(), size=grid_hw,
                                 mode=self.interpolate_mode, antialias=True)
            pos_embed = torch.cat([self.pos_embed[:, :with_prefix],
                                   grid.flatten(2).transpose(1, 2).to(self.pos_embed.dtype)], 1)
        else:
            pos_embed = resize_pos_embed(self.pos_embed, self.patch_resolution, grid_hw,
                                         mode=self.interpolate_mode,
                                         num_extra_tokens=with_prefix)
        prefix = self.cls_token
        if self.num_register_tokens:
            prefix = torch.cat([prefix, self.register_tokens], 1)
        if with_prefix:
            prefix = prefix + pos_embed[:, :with_prefix]
        return prefix, pos_embed[:, with_prefix:]

    def embed(self, inputs: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """``inputs (B, 3, H, W)`` -> prefix tokens ``(B, P, D)``, patch tokens with their
        positions ``(B, Ht*Wt, D)`` and the grid ``(Ht, Wt)``."""
        patch_tokens, grid_hw = self.patch_embed(inputs)
        prefix, patch_pos = self.position_embedding(grid_hw)
        return prefix.expand(len(inputs), -1, -1), patch_tokens + patch_pos, grid_hw

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        """As ``VisionTransformer.forward``, with the token layout above."""
        prefix, patch_tokens, grid_hw = self.embed(inputs)
        tokens = self.pre_norm(self.drop_after_pos(torch.cat([prefix, patch_tokens], 1)))
        outs = []
        for index, layer in enumerate(self.layers):
            tokens = layer(tokens)
            if index == len(self.layers) - 1 and self.final_norm:
                tokens = self.ln1(tokens)
            if index in self.out_indices:
                outs.append(self._format_output(tokens, grid_hw))
        return tuple(outs)
