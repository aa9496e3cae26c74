"""configs/det and configs/seg for the ConvNeXt-T student: they inherit mmdet's and mmseg's
ConvNeXt-T baselines, take the converted H-GKD ConvNeXt-T with zero missing or unexpected
keys, train 2 iterations on the sample data and are evaluated (COCO metric, mIoU)."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import hgkd_mm  # noqa: F401
from downstream_setup import (assert_backbone_loaded, assert_coco_metrics, assert_miou,
                              assert_takes_converted_backbone, tiny_det_config,
                              tiny_seg_config, tool_log)
from helpers import ROOT, TINY_TEACHER, load_tool, run_tool

DET = ROOT / 'configs/det/mask-rcnn_convnext-t-hgkd-pre_fpn_1x_coco.py'
SEG = ROOT / 'configs/seg/upernet_convnext-t-hgkd-pre_8xb2-amp-160k_ade20k-512x512.py'


@pytest.fixture(scope='module')
def dense_convnext(tmp_path_factory):
    """An H-GKD ConvNeXt-T checkpoint (random student) converted to mmpretrain keys."""
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    folder = tmp_path_factory.mktemp('hgkd_convnext')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = PRETRAIN_MODELS.build(dict(
            type='HGKD', backbone=dict(type='HGKDSparseConvNeXt', arch='tiny'),
            teacher=TINY_TEACHER, neck=dict(type='HGKDUNetDecoder', channels=32),
            head=dict(type='HGKDDistillHead')))
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, folder / 'hgkd.pth')
    converter = load_tool('model_converters/hgkd_to_dense.py')
    converter.convert(str(folder / 'hgkd.pth'), str(folder / 'convnext-tiny_dense.pth'))
    return folder / 'convnext-tiny_dense.pth'


@pytest.mark.parametrize('path, base', [
    (DET, 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'),
    (SEG, 'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py')])
def test_config_takes_the_converted_convnext(path, base, dense_convnext):
    assert f"_base_ = '{base}'" in path.read_text()
    cfg = Config.fromfile(path)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == ('mmpretrain.ConvNeXt', 'tiny')
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.checkpoint,
                                     prefix='backbone.')
    assert dict(type='StrictPretrainedHook') in cfg.custom_hooks
    if path == DET:
        assert cfg.train_cfg.max_epochs == 12
        assert cfg.param_scheduler[1].milestones == [8, 11]
    else:
        assert cfg.train_cfg.max_iters == 160000
    assert_takes_converted_backbone(cfg, dense_convnext)


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_trains_2_iters_and_evaluates(task, tmp_path, dense_convnext):
    make_config, metrics = ((tiny_det_config, assert_coco_metrics) if task == 'det'
                            else (tiny_seg_config, assert_miou))
    config = make_config(tmp_path / f'{task}.py', dense_convnext,
                         base=DET if task == 'det' else SEG)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir], timeout=900, threads=2)
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert_backbone_loaded(log, dense_convnext)
    metrics(log, work_dir)
