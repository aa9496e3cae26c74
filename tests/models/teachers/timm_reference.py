"""timm's ViT and MAE's decoder with random weights, the references of the teacher tests.

MAE's official code builds its encoder and decoder from timm's ``VisionTransformer`` and
``Block``; ``files`` writes the same weights in the three checkpoint formats the teacher
reads. tests/models/teachers/conftest.py exposes the fixtures.
"""
from functools import partial
from typing import Dict

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from timm.models.vision_transformer import Block
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import Tensor, nn

from hgkd_mm.models.teachers import FrozenViTTeacher

IMG, PATCH, EMBED, DEPTH, HEADS = 64, 16, 64, 2, 4
GRID = IMG // PATCH  # teacher grid 4 x 4; the stride-32 mask grid is 2 x 2
ARCH = dict(embed_dims=EMBED, num_layers=DEPTH, num_heads=HEADS, feedforward_channels=4 * EMBED)
DECODER_EMBED, DECODER_HEADS = 32, 4
TOL = dict(atol=1e-5, rtol=1e-5)


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """Move every weight off its init (LayerNorm 1/0, zero tokens) so that a wrong key
    mapping changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return module.eval()


class TimmMAEDecoder(nn.Module):
    """MAE's decoder under its official parameter names, built from timm blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(EMBED, DECODER_EMBED)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DECODER_EMBED))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, GRID * GRID + 1, DECODER_EMBED))
        self.decoder_blocks = nn.ModuleList(
            [Block(DECODER_EMBED, DECODER_HEADS, mlp_ratio=4, qkv_bias=True,
                   norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(2)])
        self.decoder_norm = nn.LayerNorm(DECODER_EMBED, eps=1e-6)
        self.decoder_pred = nn.Linear(DECODER_EMBED, PATCH * PATCH * 3)


@pytest.fixture(scope='module')
def timm_vit() -> TimmViT:
    torch.manual_seed(0)
    vit = TimmViT(img_size=IMG, patch_size=PATCH, embed_dim=EMBED, depth=DEPTH,
                  num_heads=HEADS, mlp_ratio=4, qkv_bias=True, num_classes=10)
    return _perturb(vit, seed=1)


@pytest.fixture(scope='module')
def timm_decoder() -> TimmMAEDecoder:
    torch.manual_seed(0)
    return _perturb(TimmMAEDecoder(), seed=2)


@pytest.fixture(scope='module')
def images() -> Tensor:
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope='module')
def files(tmp_path_factory, timm_vit, timm_decoder) -> Dict[str, str]:
    """The same weights as a timm state dict, an official MAE file (with decoder) and an
    mmpretrain zoo file (with ``neck.``), the latter written from the loaded teacher."""
    folder = tmp_path_factory.mktemp('teacher_ckpt')
    paths = {name: str(folder / f'{name}.pth') for name in ('timm', 'mae', 'zoo')}
    torch.save(timm_vit.state_dict(), paths['timm'])
    torch.save({'model': {**timm_vit.state_dict(), **timm_decoder.state_dict()}}, paths['mae'])

    teacher = FrozenViTTeacher(ARCH, img_size=IMG, patch_size=PATCH, input_mode='masked',
                               checkpoint=paths['mae'], decoder_num_heads=DECODER_HEADS)
    state_dict = {f'backbone.{k}': v for k, v in teacher.vit.state_dict().items()}
    state_dict.update({f'neck.{k}': v for k, v in teacher.decoder.state_dict().items()})
    state_dict['data_preprocessor.mean'] = torch.zeros(3)
    meta = dict(epoch=np.int64(1600), lr=np.float64(1.5e-4), history=np.arange(3.0),
                cfg=ConfigDict(model=dict(type='MAE')))
    torch.save({'state_dict': state_dict, 'meta': meta}, paths['zoo'])
    return paths


def build_teacher(path=None, **kwargs) -> FrozenViTTeacher:
    kwargs.setdefault('decoder_num_heads', DECODER_HEADS)
    return FrozenViTTeacher(ARCH, img_size=IMG, patch_size=PATCH, checkpoint=path, **kwargs)
