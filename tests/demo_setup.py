"""The demo's H-GKD config made tiny for tests: a generated 2-layer ViT teacher, 64 px,
four random images, two iterations of one epoch (seconds on a CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from helpers import ROOT, TINY_VIT

DEMO_CONFIG = ROOT / 'configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py'
IMG_SIZE = 64

CONFIG = """
_base_ = {base!r}
model = dict(neck=dict(channels=32),
             teacher=dict(arch={arch!r}, img_size={size}, checkpoint={teacher!r}))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={images!r}, ann_file='', pipeline=[
        dict(type='LoadImageOrRaise'), dict(type='RandomResizedCrop', scale={size}),
        dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]))
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
"""


def write_demo_setup(folder: Path) -> Path:
    """``folder/images/x/{0..3}.png`` (80x80 random), ``folder/teacher.pth`` (a random tiny
    ViT, mmpretrain's key names) and ``folder/hgkd_demo_tiny.py``; returns the config."""
    rng = np.random.RandomState(0)
    (folder / 'images' / 'x').mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.randint(0, 256, (80, 80, 3), np.uint8)).save(
            folder / 'images' / 'x' / f'{i}.png')
    from mmengine.registry import DefaultScope
    from mmpretrain.models.backbones import VisionTransformer
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        vit = VisionTransformer(TINY_VIT, img_size=IMG_SIZE, patch_size=16, out_type='featmap')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}},
               folder / 'teacher.pth')
    config = folder / 'hgkd_demo_tiny.py'
    config.write_text(CONFIG.format(base=str(DEMO_CONFIG), arch=TINY_VIT, size=IMG_SIZE,
                                    teacher=str(folder / 'teacher.pth'),
                                    images=str(folder / 'images')))
    return config
