"""configs/{cls,det,seg}: every shipped config loads, follows its recipe, and its model takes
the converted backbone with zero missing or unexpected keys."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

from downstream_setup import assert_takes_converted_backbone
from helpers import DATA_ABS, ROOT

from hgkd_mm.utils import merge_cfg_options

# the ResNet-50 configs (the ConvNeXt-T ones: test_convnext_downstream.py)
CONFIGS = sorted(path for task in ('cls', 'det', 'seg')
                 for path in (ROOT / 'configs' / task).glob('*.py')
                 if 'convnext' not in path.name)
SYNC_BN = dict(type='SyncBN', requires_grad=True)


def load(name: str) -> Config:
    return Config.fromfile(ROOT / 'configs' / name)


def test_all_configs_found():
    names = {p.relative_to(ROOT / 'configs').as_posix() for p in CONFIGS}
    assert {'det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py',
            'det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_2x_coco.py',
            'seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py',
            'cls/resnet50_hgkd-pre_8xb256-coslr-300e_in1k.py',
            'cls/resnet50_hgkd-pre_8xb32-linear-steplr-100e_in1k.py'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_takes_the_converted_backbone(path, dense_r50):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports[0] == 'hgkd_mm'
    assert cfg.custom_imports.allow_failed_imports is False
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.depth) == ('ResNet', 50)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.checkpoint,
                                     prefix='backbone.')
    assert dict(type='StrictPretrainedHook') in cfg.custom_hooks

    assert_takes_converted_backbone(cfg, dense_r50)


def test_mask_rcnn_recipe():
    cfg = load('det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py')
    backbone = cfg.model.backbone
    assert (backbone.frozen_stages, backbone.norm_eval, backbone.norm_cfg) == (-1, False, SYNC_BN)
    assert cfg.model.neck.norm_cfg == SYNC_BN
    assert cfg.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert cfg.model.roi_head.bbox_head.norm_cfg == SYNC_BN
    assert cfg.model.roi_head.mask_head.norm_cfg == SYNC_BN
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.train_cfg.max_epochs == 12
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'RandomChoiceResize' and resize.keep_ratio
    assert [short for _, short in resize.scales] == list(range(640, 801, 32))
    cfg_2x = load('det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_2x_coco.py')
    assert cfg_2x.train_cfg.max_epochs == 24
    assert cfg_2x.param_scheduler[1].milestones == [16, 22]
    assert cfg_2x.param_scheduler[0].end == 1000
    assert cfg_2x.train_dataloader == cfg.train_dataloader
    assert cfg_2x.model == cfg.model


def test_retinanet_example_trains_bn_with_synced_statistics():
    backbone = load('det/retinanet_r50-hgkd-pre_fpn_1x_coco.py').model.backbone
    assert (backbone.frozen_stages, backbone.norm_eval, backbone.norm_cfg) == (-1, False, SYNC_BN)


def test_upernet_recipe():
    cfg = load('seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py')
    assert cfg.model.pretrained is None
    assert not cfg.model.backbone.get('deep_stem', False)
    assert cfg.model.backbone.norm_cfg == SYNC_BN and cfg.model.backbone.norm_eval is False
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    assert cfg.crop_size == (512, 512) and cfg.model.decode_head.num_classes == 150
    assert cfg.train_cfg.max_iters == 160000


def test_classification_recipes():
    finetune = load('cls/resnet50_hgkd-pre_8xb256-coslr-300e_in1k.py')
    assert finetune.train_cfg.max_epochs == 300
    assert finetune.optim_wrapper.optimizer.type == 'Lamb'
    assert finetune.model.backbone.norm_cfg == SYNC_BN
    assert finetune.train_dataloader.dataset.data_root == 'data/imagenet'
    linear = load('cls/resnet50_hgkd-pre_8xb32-linear-steplr-100e_in1k.py')
    assert linear.model.backbone.frozen_stages == 4
    assert linear.optim_wrapper.optimizer.lr == 30.
    assert linear.train_cfg.max_epochs == 100


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_checkpoint_option_reaches_the_init_cfg(path):
    """``--cfg-options checkpoint=PATH`` loads PATH, not the file named in the config."""
    cfg = merge_cfg_options(Config.fromfile(path), {'checkpoint': 'other/dense.pth'})
    assert cfg.checkpoint == 'other/dense.pth'
    assert cfg.model.backbone.init_cfg.checkpoint == 'other/dense.pth'
    assert 'work_dirs/hgkd_r50/resnet50_dense.pth' not in cfg.pretty_text


def test_shipped_mask_rcnn_train_pipeline_runs():
    """The multi-scale pipeline as shipped (the training tests use a small fixed size)."""
    from mmdet.registry import DATASETS
    cfg = load('det/mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py')
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = str(DATA_ABS / 'coco-tiny') + '/'
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(dataset_cfg)
    sample = dataset[0]
    height, width = sample['inputs'].shape[-2:]
    assert 640 <= min(height, width) <= 800 or max(height, width) == 1333
    assert len(sample['data_samples'].gt_instances.masks) > 0


def test_shipped_upernet_train_pipeline_runs():
    from mmseg.registry import DATASETS
    cfg = load('seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py')
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = str(DATA_ABS / 'ade20k-sample' / 'ADEChallengeData2016')
    dataset_cfg.data_prefix = dict(img_path='images/validation',
                                   seg_map_path='annotations/validation')
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(dataset_cfg)
    sample = dataset[0]
    size = tuple(sample['inputs'].shape[-2:])  # the model's data_preprocessor pads to 512
    assert max(size) <= 512 and cfg.crop_size == (512, 512)
    assert tuple(sample['data_samples'].gt_sem_seg.data.shape[-2:]) == size
