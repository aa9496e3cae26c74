"""configs/cls: fine-tuning and linear probing a converted H-GKD ResNet-50 on Caltech-101
images (101 classes, 64 px, one short epoch each)."""
import json
from pathlib import Path

import torch

from downstream_setup import assert_backbone_loaded, caltech_ann_files, tool_log, write_config
from helpers import DATA, ROOT, run_tool

FINETUNE = ROOT / 'configs/cls/resnet50_hgkd-pre_8xb256-coslr-300e_in1k.py'
LINEAR = ROOT / 'configs/cls/resnet50_hgkd-pre_8xb32-linear-steplr-100e_in1k.py'


def tiny_cls_config(path: Path, base: Path, checkpoint: Path) -> Path:
    """``base`` on a Caltech-101 split at 64 px: its own train augmentation with the crop
    size changed, 1 epoch of 2 iterations, validation on 16 held-out images."""
    train_ann, val_ann = caltech_ann_files(path.parent)
    return write_config(path, f"""
_base_ = '{base}'
data_root = '{DATA}/caltech101/train'
data_preprocessor = dict(num_classes=101)
model = dict(
    backbone=dict(init_cfg=dict(checkpoint='{checkpoint}')),
    head=dict(num_classes=101))
train_pipeline = _base_.train_pipeline
assert train_pipeline[1]['type'] == 'RandomResizedCrop'
train_pipeline[1]['scale'] = 64
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=73, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='{train_ann}', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 ann_file='{val_ann}', pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
""")


def train(tmp_path: Path, base: Path, checkpoint: Path) -> Path:
    config = tiny_cls_config(tmp_path / 'cls.py', base, checkpoint)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir], timeout=900, threads=2)
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert_backbone_loaded(log, checkpoint)
    assert 'accuracy/top1: ' in log and 'accuracy/top5: ' in log
    metrics = json.loads(next(work_dir.glob('*/vis_data/scalars.json')).read_text()
                         .splitlines()[-1])
    assert 0 <= metrics['accuracy/top1'] <= 100, metrics
    return work_dir / 'epoch_1.pth'


def backbone_weights(path: Path) -> dict:
    state_dict = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    return {k: v for k, v in state_dict.items() if k.startswith('backbone.')}


def test_finetune_caltech(tmp_path, dense_r50):
    trained = backbone_weights(train(tmp_path, FINETUNE, dense_r50))
    pretrained = backbone_weights(dense_r50)
    assert trained.keys() == pretrained.keys()
    assert not torch.equal(trained['backbone.conv1.weight'], pretrained['backbone.conv1.weight'])


def test_linear_probe_caltech(tmp_path, dense_r50):
    trained = backbone_weights(train(tmp_path, LINEAR, dense_r50))
    pretrained = backbone_weights(dense_r50)
    assert trained.keys() == pretrained.keys()
    for key, value in pretrained.items():  # frozen, BN statistics included
        torch.testing.assert_close(trained[key], value, rtol=0, atol=0, msg=key)
