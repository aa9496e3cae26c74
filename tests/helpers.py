"""What the tests share: paths, tiny H-GKD and classification configs, image folders, tool
runs, random masks and an op recorder. The fixtures built from them are in conftest.py.

The tests import it by name: pytest puts ``tests/``, the folder of conftest.py, on the path.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
# Relative to the repository root, where the tools run (CI keeps shared/ beside the repo).
DATA = '../shared/data'
DATA_ABS = (ROOT / DATA).resolve()
CONVERTER = ROOT / 'tools/model_converters/hgkd_to_dense.py'

# ---------------------------------------------------------------- tiny H-GKD model

TINY_VIT = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
TINY_TEACHER = dict(type='FrozenViTTeacher', arch=TINY_VIT, img_size=64, patch_size=16)
STAGE_WIDTHS = {18: (64, 128, 256, 512), 50: (256, 512, 1024, 2048)}
IMAGENET_PREPROCESSOR = dict(type='SelfSupDataPreprocessor', mean=[123.675, 116.28, 103.53],
                             std=[58.395, 57.12, 57.375], to_rgb=True)


def tiny_hgkd_cfg(depth: int = 18, channels: int = 64, **overrides) -> dict:
    """A small H-GKD model for 64x64 images: a sparse ResNet-``depth`` student with a
    ``channels``-wide decoder and a 2-layer, 64-wide ViT teacher; ``overrides`` replace
    top-level keys (``teacher``, ``data_preprocessor``, ...)."""
    cfg = dict(type='HGKD', mask_ratio=0.5,
               backbone=dict(type='HGKDSparseResNet', depth=depth),
               neck=dict(type='HGKDUNetDecoder', in_channels=STAGE_WIDTHS[depth],
                         channels=channels),
               head=dict(type='HGKDDistillHead'), teacher=TINY_TEACHER)
    cfg.update(overrides)
    return copy.deepcopy(cfg)  # a model may change its config in place


def build_hgkd(depth: int) -> torch.nn.Module:
    """``tiny_hgkd_cfg(depth)`` with ImageNet normalisation, built by mmpretrain's registry."""
    import hgkd_mm  # noqa: F401 (registers the modules)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(tiny_hgkd_cfg(depth, data_preprocessor=IMAGENET_PREPROCESSOR))


def train_and_save_hgkd(depth: int, path: Path, steps: int = 2, seed: int = 0) -> Path:
    """A few H-GKD steps in this process, saved as mmengine saves them (with numpy state)."""
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    torch.manual_seed(seed)
    model = build_hgkd(depth).train()
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    hub = MessageHub(f'hgkd_r{depth}_{seed}')
    for _ in range(steps):
        losses = model.loss(torch.randn(2, 3, 64, 64))
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        hub.update_scalar('train/loss', loss.item())
    hub.update_info('seed', np.int64(seed))
    save_checkpoint({'meta': {'epoch': 0, 'iter': steps, 'seed': np.int64(seed)},
                     'state_dict': weights_to_cpu(model.state_dict()),
                     'message_hub': hub.state_dict()}, str(path))
    return path


def short_hgkd_run(work_dir: Path, depth: int = 50, iters: int = 2) -> Path:
    """Train H-GKD ``iters`` iterations on 8 sample images with tools/train.py; return the
    checkpoint."""
    work_dir.mkdir(parents=True, exist_ok=True)
    images = sorted(p.relative_to(DATA_ABS / 'imagenet-sample')
                    for p in (DATA_ABS / 'imagenet-sample').glob('*/*.jpg'))[:8]
    ann_file = work_dir / 'train.txt'
    ann_file.write_text(''.join(f'{p}\n' for p in images))
    config = work_dir / 'hgkd_short.py'
    config.write_text(f"""
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = {tiny_hgkd_cfg(depth, data_preprocessor=IMAGENET_PREPROCESSOR)!r}
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root='{DATA}/imagenet-sample',
                 ann_file='{ann_file}', with_label=False,
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.67, 1.0)),
                           dict(type='PackInputs')]))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3))
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters})
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={iters}),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
""".lstrip())
    run_tool(['tools/train.py', config, '--work-dir', work_dir], check=True)
    return work_dir / f'iter_{iters}.pth'


def convert(src: Path, dst: Path, fmt: str = 'mmpretrain') -> Path:
    """Run the converter's command line; return ``dst``."""
    result = run_tool([CONVERTER, src, dst, '--format', fmt])
    assert result.returncode == 0, result.stderr
    return dst


# ------------------------------------------------------- tiny classification run

TINY_CLS_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, norm_cfg=dict(type='SyncBN', requires_grad=True)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=512,
              loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root={data_root!r}, pipeline=[
        dict(type='LoadImageFromFile'),
        # random transforms: exact resume needs the RNG states (RNGStateHook)
        dict(type='RandomResizedCrop', scale=32),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')]))
test_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root={data_root!r}, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
test_evaluator = dict(type='Accuracy', topk=(1, ))
test_cfg = dict()
train_cfg = {train_cfg!r}
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[1], gamma=0.1)
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=1))
custom_hooks = [dict(type='RNGStateHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
"""

EPOCHS_2 = dict(type='EpochBasedTrainLoop', max_epochs=2)
ITERS_2 = dict(type='IterBasedTrainLoop', max_iters=2)


def write_cls_config(path: Path, data_root: Path, train_cfg: dict) -> Path:
    """A ResNet-18 classifier with SyncBN (on CPU: BN) on the 2-class ``data_root``, which
    trains on CPU in seconds."""
    path.write_text(TINY_CLS_CONFIG.format(data_root=str(data_root), train_cfg=train_cfg))
    return path


def make_image_folder(root: Path, classes: Sequence[str] = ('a', 'b'), per_class: int = 4,
                      size: int = 32) -> Path:
    """``root/<class>/<i>.png``: random RGB images in mmpretrain's CustomDataset layout."""
    rng = np.random.RandomState(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.randint(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f'{i}.png')
    return root


# ------------------------------------------------------------------------- tools

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(args: Sequence, timeout: float = 900, threads: int = 1, env: dict | None = None,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run a program of the repository, e.g. ``['tools/train.py', config]`` (a .py with this
    interpreter, a .sh with bash), from the repository root on ``threads`` threads, with a
    free ``PORT`` for the launchers; ``env`` adds variables. ``check``: assert it succeeds."""
    args = [str(a) for a in args]
    command = ['bash', *args] if args[0].endswith('.sh') else [sys.executable, *args]
    full_env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads),
                'PYTHON': sys.executable, 'PORT': str(free_port()), 'PYTHONPATH': str(ROOT),
                **(env or {})}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env=full_env)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def load_tool(relative: str):
    """A fresh module of ``tools/<relative>`` (e.g. ``'analysis_tools/probe.py'``): the
    scripts of tools/ are not a package. It is kept in ``sys.modules`` (dataclasses look
    their module up there); its folder is on ``sys.path`` while it loads, as tools import
    their neighbours."""
    path = ROOT / 'tools' / relative
    name = 'hgkd_tool_' + relative.replace('/', '_').removesuffix('.py')
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


# ------------------------------------------------------------------ masks and ops

def random_mask(batch: int, h: int, w: int, keep: int, seed: int = 0) -> torch.Tensor:
    """``(batch, h, w)`` bool, True = visible, ``keep`` visible cells per sample."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(batch, h * w, generator=g).argsort(1)[:, :keep]
    return torch.zeros(batch, h * w, dtype=torch.bool).scatter_(1, ids, True).view(batch, h, w)


class RecordOps(TorchDispatchMode):
    """A recorder of the ATen ops run inside it. ``ops``: the name of every op run, in
    order, e.g. ``'aten.convolution'``."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
