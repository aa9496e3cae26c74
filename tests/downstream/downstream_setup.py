"""What the downstream tests share: short detection and segmentation configs, metric checks."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import DATA, DATA_ABS, ROOT

DET_CONFIG = ROOT / 'configs/det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py'
SEG_CONFIG = ROOT / 'configs/seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py'
# mmengine's messages when a state dict loads with missing/unexpected keys or bad shapes
LOAD_MISMATCH = ('The model and loaded state dict do not match exactly',
                 'missing keys in source state_dict', 'size mismatch')


def coco_subset(src: Path, dst: Path, num_images: int) -> Path:
    """The first ``num_images`` images of the COCO file ``src`` and their annotations."""
    coco = json.loads(src.read_text())
    coco['images'] = coco['images'][:num_images]
    kept = {image['id'] for image in coco['images']}
    coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] in kept]
    dst.write_text(json.dumps(coco))
    return dst


def tiny_det_config(path: Path, checkpoint: Path, data_root: str = f'{DATA}/coco-tiny/',
                    batch_size: int = 2, val_images: int = 3, base: Path = DET_CONFIG) -> Path:
    """The shipped config ``base`` at 320x192, 2 iterations, fewer RoIs, validated on the
    first ``val_images`` images of val2017 (dataset and COCO metric read the same subset
    file)."""
    val_ann = ROOT / data_root / 'annotations/instances_val2017.json'
    if val_ann.is_file():
        val_ann = coco_subset(val_ann, path.with_name(f'instances_val2017_{val_images}.json'),
                              val_images)
    return write_config(path, f"""
_base_ = '{base}'
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


def tiny_seg_config(path: Path, checkpoint: Path, batch_size: int = 2,
                    base: Path = SEG_CONFIG) -> Path:
    """The shipped config ``base`` with 128x128 crops, 2 iterations, trained and evaluated
    on the three ADE20K validation images of the sample."""
    return write_config(path, f"""
_base_ = '{base}'
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


def assert_backbone_loaded(log: str, checkpoint: Path) -> None:
    """The log shows ``checkpoint`` loaded into the backbone with no key problems."""
    assert f'Loads checkpoint by local backend from path: {checkpoint}' in log, log[-3000:]
    assert f'Pretrained check passed: {checkpoint} -> backbone' in log, log[-3000:]
    for message in LOAD_MISMATCH:
        assert message not in log, f'{message!r} in the log'


def tool_log(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def assert_takes_converted_backbone(cfg, checkpoint: Path) -> None:
    """``cfg``'s model, its backbone's init_cfg pointed at ``checkpoint``, finds every
    backbone tensor there (no missing or unexpected keys)."""
    from mmengine.registry import MODELS, DefaultScope

    from hgkd_mm.utils.pretrained_check import check_pretrained, pretrained_init_cfgs
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(checkpoint)})
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    (name, module, init_cfg), = pretrained_init_cfgs(model)
    assert name == 'backbone'
    assert check_pretrained(module, init_cfg['checkpoint'], init_cfg['prefix']) == len(
        module.state_dict())


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
