"""A tiny classification run for the fault-injection tests: tools/train.py in a subprocess
that can be killed (SIGKILL) at a chosen moment, then resumed.

The run uses what makes exact resume hard: 2 persistent dataloader workers with random
crops and flips, drop path (torch's global RNG in the model), SGD momentum, one kept
checkpoint (``max_keep_ckpts=1``). Each epoch is 4 iterations; a run takes seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from helpers import ROOT, free_port, make_image_folder

from hgkd_mm.utils import safe_load

ENGINE_TESTS = Path(__file__).resolve().parent / 'engine'
EPOCHS = 4

CONFIG = """
default_scope = 'mmpretrain'
# fault_hooks: tests/engine/fault_hooks.py, on the PYTHONPATH of environment()
custom_imports = dict(imports=['hgkd_mm', 'fault_hooks'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, stem_channels=8, base_channels=8,
                  drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss')))
data_preprocessor = dict(num_classes=2, mean=[127.5] * 3, std=[127.5] * 3, to_rgb=True)
train_dataloader = dict(
    batch_size=4, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root={data_root!r}, pipeline=[
        dict(type='LoadImageOrRaise', on_error={on_error!r}),
        dict(type='RandomResizedCrop', scale=24),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='PackInputs')]))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={epochs})
optim_wrapper = dict(optimizer=dict(type='SGD', lr={lr}, momentum=0.9, weight_decay=1e-4),
                     clip_grad=dict(max_norm=5.0))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.1)
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts={keep}))
custom_hooks = [dict(type='RNGStateHook'), dict(type='DeferredGradNormHook')] + {extra_hooks!r}
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo', timeout={dist_timeout}))
randomness = dict(seed=0)
"""


def write_config(path: Path, data_root: Path, epochs: int = EPOCHS, keep: int = 1,
                 lr: float = 0.05, on_error: str = 'raise', extra_hooks: list = (),
                 dist_timeout: int = 60) -> Path:
    path.write_text(CONFIG.format(data_root=str(data_root), epochs=epochs, keep=keep, lr=lr,
                                  on_error=on_error, extra_hooks=list(extra_hooks),
                                  dist_timeout=dist_timeout))
    return path


def image_folder(root: Path) -> Path:
    """16 random 32x32 images in two classes."""
    return make_image_folder(root, per_class=8)


def train_command(config: Path, work_dir: Path, *extra, slow_save: bool = False) -> list:
    """``tools/train.py`` (or :mod:`slow_save_train`, which writes checkpoints slowly and
    prints ``SAVING <path>`` first, so a kill can land inside a write)."""
    script = ENGINE_TESTS / 'slow_save_train.py' if slow_save else ROOT / 'tools/train.py'
    return [sys.executable, str(script), str(config), '--work-dir', str(work_dir),
            *map(str, extra)]


def environment() -> dict:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
            'PYTHONPATH': f'{ROOT}{os.pathsep}{ENGINE_TESTS}', 'PORT': str(free_port())}


def run(command: list, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=timeout)


def run_and_kill(command: list, marker: str, occurrence: int = 1, delay: float = 0.0,
                 timeout: float = 300) -> str:
    """Start ``command``; SIGKILL its main process ``delay`` seconds after the
    ``occurrence``-th output line containing ``marker`` (its workers die with it, as after
    a real ``kill -9``). Returns the output up to the kill. A run that ends first fails."""
    process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, seen, deadline = [], 0, time.monotonic() + timeout
    try:
        for line in process.stdout:
            lines.append(line)
            seen += marker in line
            if seen >= occurrence:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f'no {marker!r} within {timeout} s')
        else:
            raise AssertionError(f'the run ended before {marker!r} #{occurrence}:\n'
                                 + ''.join(lines[-30:]))
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        _kill_group(process.pid)  # workers orphaned by the kill
    return ''.join(lines)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def weights(path: Path) -> dict:
    return safe_load(str(path))['state_dict']


def assert_bitwise_equal(path: Path, expected_path: Path) -> None:
    got, expected = weights(path), weights(expected_path)
    assert got.keys() == expected.keys()
    differ = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not differ, f'{len(differ)} of {len(expected)} tensors differ: {differ[:5]}'
