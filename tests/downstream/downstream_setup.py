"""Shared helpers for the downstream tests: H-GKD checkpoints, tool runs, test configs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
# Relative to the repository root, where the tools run (CI keeps shared/ beside the repo).
DATA = '../shared/data'
DATA_ABS = (ROOT / DATA).resolve()
CONVERTER = ROOT / 'tools/model_converters/hgkd_to_dense.py'
DET_CONFIG = ROOT / 'configs/det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py'
SEG_CONFIG = ROOT / 'configs/seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py'
STAGE_WIDTHS = {18: (64, 128, 256, 512), 50: (256, 512, 1024, 2048)}
# mmengine's messages when a state dict loads with missing/unexpected keys or bad shapes
LOAD_MISMATCH = ('The model and loaded state dict do not match exactly',
                 'missing keys in source state_dict', 'size mismatch')
TINY_TEACHER = dict(type='FrozenViTTeacher',
                    arch=dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128),
                    img_size=64, patch_size=16)
PREPROCESSOR = dict(type='SelfSupDataPreprocessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], to_rgb=True)


def hgkd_model_cfg(depth: int) -> dict:
    """A small H-GKD model: sparse ResNet-``depth`` student, 2-layer ViT teacher."""
    return dict(type='HGKD', mask_ratio=0.5,
                backbone=dict(type='HGKDSparseResNet', depth=depth),
                neck=dict(type='HGKDUNetDecoder', in_channels=STAGE_WIDTHS[depth], channels=64),
                head=dict(type='HGKDDistillHead'), teacher=TINY_TEACHER,
                data_preprocessor=PREPROCESSOR)


def build_hgkd(depth: int) -> torch.nn.Module:
    import hgkd_mm  # noqa: F401 (registers the modules)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(hgkd_model_cfg(depth))


def train_and_save_hgkd(depth: int, path: Path, steps: int = 2, seed: int = 0) -> Path:
    """A few H-GKD steps in this process, saved as mmengine saves them (with numpy state)."""
    import numpy as np
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
    """Train H-GKD ``iters`` iterations with tools/train.py; return the checkpoint."""
    work_dir.mkdir(parents=True, exist_ok=True)
    images = sorted(p.relative_to(DATA_ABS / 'imagenet-sample')
                    for p in (DATA_ABS / 'imagenet-sample').glob('*/*.jpg'))[:8]
    ann_file = work_dir / 'train.txt'
    ann_file.write_text(''.join(f'{p}\n' for p in images))
    config = write_config(work_dir / 'hgkd_short.py', f"""
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = {hgkd_model_cfg(depth)!r}
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
""")
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work_dir / f'iter_{iters}.pth'


def coco_subset(src: Path, dst: Path, num_images: int) -> Path:
    """The first ``num_images`` images of the COCO file ``src`` and their annotations."""
    coco = json.loads(src.read_text())
    coco['images'] = coco['images'][:num_images]
    kept = {image['id'] for image in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
    dst.write_text(json.dumps(coco))
    return dst


def tiny_det_config(path: Path, checkpoint: Path, data_root: str = f'{DATA}/coco-tiny/',
                    batch_size: int = 2, val_images: int = 3) -> Path:
    """The shipped config at 320x192, 2 iterations, fewer RoIs, validated on the first
    ``val_images`` images of val2017 (dataset and COCO metric read the same subset file)."""
    val_ann = ROOT / data_root / 'annotations/instances_val2017.json'
    if val_ann.is_file():
        val_ann = coco_subset(val_ann, path.with_name(f'instances_val2017_{val_images}.json'),
                              val_images)
    return write_config(path, f"""
_base_ = '{DET_CONFIG}'
data_root = '{data_root}'
# fewer RoIs keep the 4-conv box head cheap on a CPU; score_thr=0 so that the barely
# trained heads still return detections for the metric to score
model = dict(
    backbone=dict(init_cfg=dict(checkpoint='{checkpoint}')),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50),
                  rcnn=dict(score_thr=0.0, max_per_img=20)))
img_scale = (320, 192)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline, ann_file='{val_ann}'))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='{val_ann}')
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=2)
# mmdet's warm-up only: 2 steps at lr ~1e-5 keep the heads' scores near 1/81 (a larger
# step can push the foreground softmax to exactly 0, leaving nothing to evaluate)
param_scheduler = [dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=2))
log_processor = dict(by_epoch=False)
""")


def tiny_seg_config(path: Path, checkpoint: Path, batch_size: int = 2) -> Path:
    """The shipped config with 128x128 crops, 2 iterations, trained and evaluated on the
    three ADE20K validation images of the sample."""
    return write_config(path, f"""
_base_ = '{SEG_CONFIG}'
data_root = '{DATA}/ade20k-sample/ADEChallengeData2016'
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(checkpoint='{checkpoint}')))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
validation = dict(img_path='images/validation', seg_map_path='annotations/validation')
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, data_prefix=validation, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, data_prefix=validation, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=2, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")


def last_metrics(work_dir: Path) -> dict:
    """The last line of the run's JSON log: ``vis_data/scalars.json`` of a training run,
    ``<timestamp>.json`` of a test run."""
    files = list(work_dir.glob('*/vis_data/scalars.json')) or list(work_dir.glob('*/*.json'))
    assert len(files) == 1, files
    lines = files[0].read_text().splitlines()
    if files[0].parent.name != 'vis_data':  # a test run's metrics: one JSON, written once
        assert len(lines) == 1, lines
    return json.loads(lines[-1])


COCO_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')


def assert_coco_metrics(log: str, work_dir: Path) -> None:
    for key in COCO_KEYS:
        assert key in log, f'{key} not in the log'
    metrics = last_metrics(work_dir)
    assert all(0 <= metrics[key] <= 1 for key in COCO_KEYS), metrics


SEG_KEYS = ('mIoU', 'aAcc', 'mAcc')


def assert_miou(log: str, work_dir: Path) -> None:
    for key in SEG_KEYS:
        assert f'{key}: ' in log, f'{key} not in the log'
    metrics = last_metrics(work_dir)
    assert all(0 <= metrics[key] <= 100 for key in SEG_KEYS), metrics


def write_config(path: Path, text: str) -> Path:
    path.write_text(text.lstrip())
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(args: Sequence, timeout: float = 900, threads: int = 1,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` (a .py with this interpreter, or a .sh) from the repo root."""
    args = [str(a) for a in args]
    command = ['bash', *args] if args[0].endswith('.sh') else [sys.executable, *args]
    full_env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                    PYTHON=sys.executable, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def convert(src: Path, dst: Path, fmt: str = 'mmpretrain') -> Path:
    """Run the converter's command line; return ``dst``."""
    result = run_tool([CONVERTER, src, dst, '--format', fmt], timeout=900)
    assert result.returncode == 0, result.stderr
    return dst


def assert_backbone_loaded(log: str, checkpoint: Path) -> None:
    """The log shows ``checkpoint`` loaded into the backbone with no key problems."""
    assert f'Loads checkpoint by local backend from path: {checkpoint}' in log, log[-3000:]
    assert f'Pretrained check passed: {checkpoint} -> backbone' in log, log[-3000:]
    for message in LOAD_MISMATCH:
        assert message not in log, f'{message!r} in the log'


def tool_log(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def caltech_ann_files(out_dir: Path, train_images: int = 8,
                      val_images: int = 16) -> tuple[Path, Path]:
    """``class/image.jpg label`` lists (labels 0..100): a train and a held-out split,
    each one image from each of several classes spread over the 101."""
    root = DATA_ABS / 'caltech101/train'
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    train, val = [], []
    for label, name in enumerate(names):
        first, second = sorted(p.name for p in (root / name).glob('*.jpg'))[:2]
        train.append(f'{name}/{first} {label}')
        val.append(f'{name}/{second} {label}')
    train_file, val_file = out_dir / 'caltech_train.txt', out_dir / 'caltech_val.txt'
    train_file.write_text('\n'.join(train[::len(names) // train_images][:train_images]) + '\n')
    val_file.write_text('\n'.join(val[::len(names) // val_images][:val_images]) + '\n')
    return train_file, val_file
