"""The frozen ViT teacher of H-GKD (method.md, step 2)."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.models.necks import MAEPretrainDecoder
from mmpretrain.models.utils import resize_pos_embed, to_2tuple
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from .checkpoint import load_state_dict_strict, load_teacher_checkpoint
from .patch_grid import visible_patches
from .vit_backbone import TeacherViT

INPUT_MODES = ('full', 'masked')
# The teacher fixes these VisionTransformer options itself.
_FIXED_VIT_OPTIONS = ('out_indices', 'out_type', 'final_norm', 'with_cls_token')


def build_mae_decoder(decoder_state: Dict[str, Tensor], num_heads: int,
                      path: str) -> MAEPretrainDecoder:
    """An ``MAEPretrainDecoder`` sized from its checkpoint tensors.

    The head count cannot be read from the tensors: every MAE release uses 16.
    """
    try:
        decoder_dims, encoder_dims = decoder_state['decoder_embed.weight'].shape
        hidden_dims = decoder_state['decoder_blocks.0.ffn.layers.0.0.weight'].shape[0]
        num_patches = decoder_state['decoder_pos_embed'].shape[1] - 1
        pred_dims = decoder_state['decoder_pred.weight'].shape[0]
    except KeyError as error:
        raise RuntimeError(
            f'Teacher checkpoint {path!r}: the MAE decoder lacks {error}') from None
    depth = len({k.split('.')[1] for k in decoder_state if k.startswith('decoder_blocks.')})
    return MAEPretrainDecoder(
        num_patches=num_patches,
        embed_dim=encoder_dims,
        decoder_embed_dim=decoder_dims,
        decoder_depth=depth,
        decoder_num_heads=num_heads,
        mlp_ratio=hidden_dims / decoder_dims,
        predict_feature_dim=pred_dims)


class PatchProjection(nn.Conv2d):
    """A ``Conv2d`` over non-overlapping patches (kernel = stride, no padding, dilation or
    groups), computed on CUDA as one matrix product of the flattened patches: the same
    result and parameters. cuDNN ran the ViT-B/16 patch embedding (3 input channels, bf16)
    with a slow kernel, about 1 ms per batch of 128 on the H100; on the CPU the matrix
    product was the slower one, so there it stays a convolution."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> nn.Conv2d:
        """``conv`` as a ``PatchProjection`` with its weights, or ``conv`` itself if it is
        not a patch projection."""
        if (type(conv) is not nn.Conv2d or conv.kernel_size != conv.stride
                or conv.padding != (0, 0) or conv.dilation != (1, 1) or conv.groups != 1):
            return conv
        # not initialised (that would draw from the RNG, and shift every later init)
        patch = torch.nn.utils.skip_init(
            cls, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        patch.load_state_dict(conv.state_dict())
        return patch

    def forward(self, x: Tensor) -> Tensor:
        return self.matmul_forward(x) if x.is_cuda else super().forward(x)

    def matmul_forward(self, x: Tensor) -> Tensor:
        (kh, kw), (batch, channels, height, width) = self.kernel_size, x.shape
        h, w = height // kh, width // kw  # a remainder is dropped, as the strided conv does
        patches = (x[..., :h * kh, :w * kw].reshape(batch, channels, h, kh, w, kw)
                   .permute(0, 2, 4, 1, 3, 5).reshape(batch * h * w, channels * kh * kw))
        out = F.linear(patches, self.weight.flatten(1), self.bias)  # (B * h * w, D)
        return out.view(batch, h, w, -1).permute(0, 3, 1, 2)  # (B, D, h, w), NHWC strides


def visible_indices(visible: Tensor) -> Tensor:
    """Positions of the visible patches, in raster order.

    Args:
        visible: ``(B, N)`` bool, True = visible; every sample must have the same count.

    Returns:
        ``(B, N_visible)`` long indices into the ``N`` patches.
    """
    low, high = torch.stack(torch.aminmax(visible.sum(1))).tolist()  # one host sync
    if low != high:
        raise ValueError('input_mode=masked needs the same number of visible patches in every '
                         f'sample, got between {low} and {high}')
    # a stable sort of (not visible) moves visible positions first and keeps their order
    order = torch.argsort((~visible).to(torch.uint8), dim=1, stable=True)
    return order[:, :high]


@torch.compiler.assume_constant_result  # else torch.compile splits the graph there
def _cuda_bf16_supported() -> bool:
    return torch.cuda.is_bf16_supported()


def _gather_tokens(tokens: Tensor, indices: Tensor) -> Tensor:
    """``(B, N, D)``, ``(B, K)`` -> ``(B, K, D)``."""
    return tokens.gather(1, indices[..., None].expand(-1, -1, tokens.shape[-1]))


def _tokens_to_grid(tokens: Tensor, grid_hw: Tuple[int, int]) -> Tensor:
    """``(B, Ht*Wt, D)`` -> ``(B, D, Ht, Wt)``."""
    return tokens.unflatten(1, grid_hw).permute(0, 3, 1, 2)


@MODELS.register_module()
class FrozenViTTeacher(BaseModule):
    """A frozen ViT (mmpretrain's ``VisionTransformer`` as :class:`TeacherViT`, which adds
    timm's DINOv2 token layouts) giving patch-token targets.

    The module always stays in eval mode (``train()`` is a no-op), its parameters never
    require grad, and ``forward`` runs under ``torch.no_grad()``, in bf16 autocast on CUDA.

    Input modes:

    - ``'full'``: the ViT sees the whole image; one ``(B, D, Ht, Wt)`` grid per
      ``out_layers`` entry (the last block after the final norm, as mmpretrain's ViT).
    - ``'masked'``: the encoder sees only the visible patches, as in MAE pre-training.

      * With an MAE decoder in the checkpoint, the decoder fills in the masked patches.
        The result is the decoder's last hidden features after its norm (before
        ``decoder_pred``) at **all** positions, because the decoder width (512 for the
        MAE releases) differs from the encoder width. ``embed_dims`` is then the decoder
        width, and only the last block can be an out layer.
      * Without a decoder, the result is the encoder features at visible positions and
        zeros at masked positions, which therefore carry no target (a warning is logged).

    Args:
        arch: ``VisionTransformer`` arch name (any of its ``arch_zoo``: ``'base'``,
            ``'dinov2-s'``, ...) or dict.
        img_size: the size the checkpoint's ``pos_embed`` was trained for (518 for
            DINOv2); any input size works, square or not (``pos_embed`` is interpolated,
            the image padded to whole patches).
        patch_size: ViT patch size; one that does not divide the mask cell (14) is
            taken in ``'full'`` mode (see :mod:`.patch_grid` for the loss positions).
        out_layers: block indices to return, negative allowed, strictly increasing.
        input_mode: ``'full'`` or ``'masked'``.
        checkpoint: path to an mmpretrain, timm or official MAE checkpoint, loaded
            strictly; ``None`` keeps a random teacher (for tests and benchmarks).
        autocast: run in bf16 autocast on CUDA (float32 on CPU either way).
        decoder_num_heads: attention heads of the MAE decoder (not stored in checkpoints).
        **vit_kwargs: passed to :class:`TeacherViT` / ``VisionTransformer``; for DINOv2
            ``layer_scale_init_value=1e-5`` (LayerScale), and with registers
            ``num_register_tokens=4, pos_embed_prefix=False``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 224,
                 patch_size: int = 16,
                 out_layers: Union[int, Sequence[int]] = (-1, ),
                 input_mode: str = 'full',
                 checkpoint: Optional[str] = None,
                 autocast: bool = True,
                 decoder_num_heads: int = 16,
                 **vit_kwargs) -> None:
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be 'full' or 'masked', got {input_mode!r}")
        fixed = sorted(set(_FIXED_VIT_OPTIONS) & set(vit_kwargs))
        if fixed:
            raise ValueError(f'FrozenViTTeacher sets {fixed} itself; use out_layers instead')
        self.vit = TeacherViT(
            arch=arch, img_size=img_size, patch_size=patch_size, out_type='featmap',
            final_norm=True, with_cls_token=True, **vit_kwargs)
        patch_embed = self.vit.patch_embed
        patch_embed.projection = PatchProjection.from_conv(patch_embed.projection)
        self.out_layers = self._check_out_layers(out_layers, self.vit.num_layers)
        self.vit.out_indices = list(self.out_layers)
        self.input_mode = input_mode
        self.autocast = autocast
        self.patch_size = patch_size
        self.img_size = img_size  # the input side it was built for
        self.checkpoint = checkpoint
        self.decoder: Optional[MAEPretrainDecoder] = None

        if checkpoint is None:
            print_log('FrozenViTTeacher has no checkpoint: the teacher is random',
                      logger='current', level=logging.WARNING)
        else:
            encoder_state, decoder_state = load_teacher_checkpoint(checkpoint)
            load_state_dict_strict(self.vit, encoder_state, checkpoint, 'teacher encoder')
            if input_mode == 'masked' and decoder_state is not None:
                self.decoder = build_mae_decoder(decoder_state, decoder_num_heads, checkpoint)
                load_state_dict_strict(self.decoder, decoder_state, checkpoint, 'MAE decoder')
            print_log(f'FrozenViTTeacher loaded {checkpoint}: {len(encoder_state)} encoder '
                      'tensors' + (' and the MAE decoder' if self.decoder is not None else ''),
                      logger='current')

        if self.decoder is not None and self.out_layers != [self.vit.num_layers - 1]:
            raise ValueError('out_layers must be (-1,) with input_mode=masked and an MAE decoder '
                             f'(the decoder follows the last block), got blocks {self.out_layers}')
        if input_mode == 'masked' and self.decoder is None:
            print_log('FrozenViTTeacher: input_mode=masked without an MAE decoder in the '
                      'checkpoint, so masked positions carry no target (zeros)',
                      logger='current', level=logging.WARNING)
        self.embed_dims: int = (self.decoder.decoder_embed.out_features
                                if self.decoder is not None else self.vit.embed_dims)
        for module in self.modules():  # mmpretrain's np.linspace rates: torch.compile
            if isinstance(getattr(module, 'drop_prob', None), np.floating):  # cannot branch
                module.drop_prob = float(module.drop_prob)  # on a numpy float (graph break)
        self.requires_grad_(False)
        self.train(False)

    @staticmethod
    def _check_out_layers(out_layers: Union[int, Sequence[int]], num_layers: int) -> List[int]:
        if isinstance(out_layers, int):
            out_layers = (out_layers, )
        if not all(-num_layers <= i < num_layers for i in out_layers) or not out_layers:
            raise ValueError(f'out_layers must be block indices in [-{num_layers}, '
                             f'{num_layers}), got {tuple(out_layers)}')
        layers = [i % num_layers for i in out_layers]
        if layers != sorted(set(layers)):
            raise ValueError(f'out_layers must be strictly increasing blocks, got {out_layers}')
        return layers

    def init_weights(self) -> None:
        """Keep the checkpoint: a parent's ``init_weights()`` must not re-initialise it."""
        if self.checkpoint is None:
            super().init_weights()

    def train(self, mode: bool = True) -> 'FrozenViTTeacher':
        """The teacher is frozen: always eval mode, whatever ``mode`` says."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None) -> List[Tensor]:
        """Teacher targets.

        Args:
            inputs: ``(B, 3, H, W)`` images.
            mask: ``(B, h, w)`` bool, True = visible, on the student's grid (stride 32);
                required with ``input_mode='masked'``, ignored with ``'full'``.

        Returns:
            One float32 ``(B, embed_dims, H/patch, W/patch)`` grid per out layer.
        """
        use_bf16 = self.autocast and inputs.is_cuda and _cuda_bf16_supported()
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=use_bf16):
            if self.input_mode == 'full':
                grids = list(self.vit(inputs))
            else:
                if mask is None:
                    raise ValueError("input_mode='masked' needs a mask")
                grids = self._forward_masked(inputs, mask)
        return [grid.float() for grid in grids]

    def visible_patches(self, mask: Tensor, image_hw: Tuple[int, int]) -> Tensor:
        """The student's ``mask (B, h, w)`` on this teacher's patch grid of an ``image_hw``
        image, ``(B, Ht, Wt)`` bool: a patch is masked when at least half of its area lies
        in masked cells (:mod:`.patch_grid`)."""
        return visible_patches(mask, image_hw, self.patch_size)

    def patch_visibility(self, mask: Tensor, grid_hw: Tuple[int, int]) -> Tensor:
        """``(B, h, w)`` bool mask -> ``(B, Ht*Wt)`` bool on the teacher's patch grid."""
        if mask.dtype != torch.bool or mask.dim() != 3:
            raise ValueError(f'mask must be a (B, h, w) bool tensor, got {mask.dtype} '
                             f'{tuple(mask.shape)}')
        (grid_h, grid_w), (mask_h, mask_w) = grid_hw, mask.shape[1:]
        if grid_h % mask_h or grid_w % mask_w:
            raise ValueError(f"input_mode='masked': the teacher grid {grid_hw} is not a "
                             f'multiple of the mask grid {(mask_h, mask_w)}; the patch size '
                             f'{self.patch_size} must divide the mask cell (a patch must not '
                             "straddle cells); use input_mode='full'")
        return (mask.repeat_interleave(grid_h // mask_h, 1)
                .repeat_interleave(grid_w // mask_w, 2).flatten(1))

    def _forward_masked(self, inputs: Tensor, mask: Tensor) -> List[Tensor]:
        """The MAE encoder over visible patches (then the decoder, if any)."""
        vit = self.vit
        prefix, patch_tokens, grid_hw = vit.embed(inputs)  # (B, P, D), (B, N, D)
        ids_visible = visible_indices(self.patch_visibility(mask, grid_hw))  # (B, Nv)
        visible_tokens = _gather_tokens(patch_tokens, ids_visible)
        tokens = vit.pre_norm(vit.drop_after_pos(torch.cat([prefix, visible_tokens], 1)))

        outputs = []  # (B, 1 + Nv, D) per out layer
        for index, layer in enumerate(vit.layers):
            tokens = layer(tokens)
            if index == vit.num_layers - 1:
                tokens = vit.ln1(tokens)
            if index in self.out_layers:
                outputs.append(tokens)

        num_prefix = prefix.shape[1]  # class (and register) tokens
        if self.decoder is not None:  # MAE's decoder takes the class and patch tokens
            tokens = outputs[-1]
            return [self._decode(torch.cat([tokens[:, :1], tokens[:, num_prefix:]], 1),
                                 ids_visible, grid_hw)]
        num_patches = grid_hw[0] * grid_hw[1]
        grids = []
        for tokens in outputs:
            visible_out = tokens[:, num_prefix:]
            full = tokens.new_zeros(len(tokens), num_patches, tokens.shape[-1])
            full.scatter_(1, ids_visible[..., None].expand_as(visible_out), visible_out)
            grids.append(_tokens_to_grid(full, grid_hw))
        return grids

    def _decode(self, encoder_tokens: Tensor, ids_visible: Tensor,
                grid_hw: Tuple[int, int]) -> Tensor:
        """MAE decoder hidden features, ``(B, 1 + Nv, D)`` -> ``(B, D_dec, Ht, Wt)``.

        Uses the decoder's modules rather than ``MAEPretrainDecoder.forward``, which
        ends in the pixel projection and needs the pre-training grid size.
        """
        decoder = self.decoder
        tokens = decoder.decoder_embed(encoder_tokens)  # (B, 1 + Nv, Dd)
        visible_tokens = tokens[:, 1:]
        num_patches = grid_hw[0] * grid_hw[1]
        patches = decoder.mask_token.to(tokens.dtype).repeat(len(tokens), num_patches, 1)
        patches = patches.scatter(1, ids_visible[..., None].expand_as(visible_tokens),
                                  visible_tokens)
        pos_embed = resize_pos_embed(decoder.decoder_pos_embed,
                                     to_2tuple(int(decoder.num_patches**0.5)), grid_hw,
                                     mode='bicubic', num_extra_tokens=1)
        tokens = torch.cat([tokens[:, :1], patches], 1) + pos_embed
        for block in decoder.decoder_blocks:
            tokens = block(tokens)
        return _tokens_to_grid(decoder.decoder_norm(tokens)[:, 1:], grid_hw)
