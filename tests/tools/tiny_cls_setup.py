"""A tiny mmpretrain classification setup that trains on CPU in seconds.

Helpers and fixtures for tests/tools (fixtures exposed by conftest.py).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
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


def make_image_folder(root: Path, per_class: int = 4, size: int = 32) -> Path:
    """``root/{a,b}/*.png``: random RGB images in mmpretrain's CustomDataset layout."""
    rng = np.random.RandomState(0)
    for label in ('a', 'b'):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.randint(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f'{i}.png')
    return root


def write_config(path: Path, data_root: Path, train_cfg: dict) -> Path:
    path.write_text(CONFIG.format(data_root=str(data_root), train_cfg=train_cfg))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(args: list, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a tool of ``tools/`` (a .py with this Python, a .sh with bash) on one thread."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHON=sys.executable,
               PORT=str(free_port()), PYTHONPATH=str(ROOT))
    tool = str(ROOT / 'tools' / args[0])
    command = ['bash', tool] if tool.endswith('.sh') else [sys.executable, tool]
    result = subprocess.run(command + [str(a) for a in args[1:]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp('data') / 'images')


@pytest.fixture(scope='session')
def trained_2_epochs(tmp_path_factory, image_folder) -> Path:
    """Work dir of an uninterrupted 2-epoch single-process CPU run."""
    tmp = tmp_path_factory.mktemp('run')
    config = write_config(tmp / 'tiny_cls.py', image_folder, EPOCHS_2)
    run_tool(['train.py', config, '--work-dir', tmp / 'work'])
    return tmp / 'work'
