"""``--cfg-options`` that would change only a variable mmengine already substituted are
refused with the settings to use; the Runner's own keys and dotted settings pass."""
import os.path as osp

import pytest
from mmengine.config import Config

from hgkd_mm.utils import check_checkpoint_variable, merge_cfg_options

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


@pytest.mark.parametrize('text, message', [
    # the variable, but no Pretrained init_cfg reads it
    ("checkpoint = 'a.pth'\nmodel = dict(backbone=dict(type='ResNet', depth=18))\n",
     'model.backbone.init_cfg.checkpoint'),
    # a Pretrained init_cfg, but no variable to carry the option to it
    ("model = dict(backbone=dict(type='ResNet', depth=18, init_cfg=dict(\n"
     "    type='Pretrained', checkpoint='torchvision://resnet50')))\n",
     'no `checkpoint` variable.*model.backbone.init_cfg'),
], ids=['no_reader', 'no_variable'])
def test_checkpoint_option_that_would_change_nothing_is_refused(tmp_path, text, message):
    path = tmp_path / 'config.py'
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        merge_cfg_options(Config.fromfile(path), {'checkpoint': 'b.pth'})


def test_derived_config_setting_checkpoint_is_stopped(tmp_path):
    """mmengine filled the base's init_cfg from the base's variable: the new value is unused."""
    derived = tmp_path / 'derived.py'
    derived.write_text(f"_base_ = {UPERNET!r}\ncheckpoint = 'my/dense.pth'\n")
    cfg = Config.fromfile(derived)
    with pytest.raises(ValueError, match="derived.py sets `checkpoint = 'my/dense.pth'`, but "
                                         ".*'work_dirs/hgkd_r50/resnet50_dense.pth'"):
        check_checkpoint_variable(cfg)
    check_checkpoint_variable(Config.fromfile(UPERNET))  # the shipped config is consistent
    fixed = tmp_path / 'fixed.py'
    fixed.write_text(f"_base_ = {UPERNET!r}\ncheckpoint = 'my/dense.pth'\n"
                     'model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))\n')
    check_checkpoint_variable(Config.fromfile(fixed))
    # the documented override: the init_cfg alone (the inherited variable is then stale)
    init_cfg_only = tmp_path / 'init_cfg_only.py'
    init_cfg_only.write_text(f"_base_ = {UPERNET!r}\n"
                             "model = dict(backbone=dict(init_cfg=dict(checkpoint='my.pth')))\n")
    check_checkpoint_variable(Config.fromfile(init_cfg_only))


def test_top_level_data_preprocessor_is_refused_when_the_model_has_one(tmp_path):
    """mmseg configs put data_preprocessor into the model; the Runner's top-level one then
    changes nothing."""
    cfg = Config.fromfile(UPERNET)
    with pytest.raises(ValueError, match=r'data_preprocessor.size=\.\.\.: the model sets its '
                                         r'own .* set model.data_preprocessor.size'):
        merge_cfg_options(cfg, {'data_preprocessor.size': (256, 256)})
    merge_cfg_options(cfg, {'model.data_preprocessor.size': (256, 256)})
    assert cfg.model.data_preprocessor.size == (256, 256)
    plain = tmp_path / 'plain.py'  # no model data_preprocessor: the Runner's one is used
    plain.write_text("model = dict(type='M')\ndata_preprocessor = dict(size=(1, 1))\n")
    assert merge_cfg_options(Config.fromfile(plain),
                             {'data_preprocessor.size': (2, 2)}).data_preprocessor.size == (2, 2)
