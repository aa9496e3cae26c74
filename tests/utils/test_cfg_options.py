"""``--cfg-options`` that would change only a variable mmengine already substituted are
refused with the settings to use; the Runner's own keys and dotted settings pass."""
import os.path as osp

import pytest
from mmengine.config import Config

from hgkd_mm.utils import merge_cfg_options

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
DEMO = osp.join(CONFIGS, 'pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py')
UPERNET = osp.join(CONFIGS, 'seg/upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py')


@pytest.mark.parametrize('config, option, value, setting', [
    (DEMO, 'teacher_checkpoint', 'other.pth', 'model.teacher.checkpoint'),
    (DEMO, 'img_size', 64, 'train_dataloader.dataset.pipeline.1.scale'),
    (DEMO, 'max_epochs', 1, 'train_cfg.max_epochs'),
    (DEMO, 'train_pipeline.1.scale', 64, 'train_dataloader.dataset.pipeline.1.scale'),
    (UPERNET, 'optimizer.lr', 0.1, 'optim_wrapper.optimizer.lr'),
    (UPERNET, 'norm_cfg.type', 'BN', 'model.backbone.norm_cfg.type'),
])
def test_substituted_variable_is_refused_with_its_settings(config, option, value, setting):
    cfg = Config.fromfile(config)
    before = cfg.pretty_text
    with pytest.raises(ValueError, match=rf'--cfg-options {option}=\.\.\.: .*{setting}'):
        merge_cfg_options(cfg, {option: value})
    assert cfg.pretty_text == before  # nothing merged


def test_runner_keys_and_settings_pass():
    cfg = merge_cfg_options(Config.fromfile(DEMO), {
        'train_cfg.max_epochs': 1, 'load_from': 'a.pth', 'randomness.seed': 3,
        'train_dataloader.dataset.pipeline.1.scale': 64})
    assert cfg.train_cfg.max_epochs == 1 and cfg.load_from == 'a.pth'
    assert cfg.train_dataloader.dataset.pipeline[1].scale == 64


def test_checkpoint_option_without_the_variable_is_refused(tmp_path):
    path = tmp_path / 'no_variable.py'
    path.write_text("model = dict(backbone=dict(type='ResNet', depth=18, init_cfg=dict(\n"
                    "    type='Pretrained', checkpoint='torchvision://resnet50')))\n")
    with pytest.raises(ValueError, match='no `checkpoint` variable.*model.backbone.init_cfg'):
        merge_cfg_options(Config.fromfile(path), {'checkpoint': 'mine.pth'})
