"""tools/train.py and tools/test.py turn their command line into config changes."""
import os
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from helpers import EPOCHS_2, ROOT, load_tool, write_cls_config


def parse(tool, monkeypatch, argv: list):
    monkeypatch.setattr(sys, 'argv', [tool.__name__] + [str(a) for a in argv])
    return tool.parse_args()


@pytest.fixture
def config(tmp_path):
    return write_cls_config(tmp_path / 'tiny_cls.py', tmp_path, EPOCHS_2)


def test_train_resume_forms(monkeypatch, config):
    train = load_tool('train.py')
    cfg = train.merge_args(Config.fromfile(config), parse(train, monkeypatch, [config, '--resume']))
    assert cfg.resume is True and cfg.load_from is None  # auto: latest in work dir
    assert cfg.work_dir == './work_dirs/tiny_cls'
    args = parse(train, monkeypatch, [config, '--resume', 'a/epoch_1.pth', '--work-dir', 'w'])
    cfg = train.merge_args(Config.fromfile(config), args)
    assert cfg.resume is True and cfg.load_from == 'a/epoch_1.pth' and cfg.work_dir == 'w'
    cfg = train.merge_args(Config.fromfile(config), parse(train, monkeypatch, [config]))
    assert not cfg.get('resume') and cfg.get('load_from') is None


def test_train_cfg_options_auto_scale_lr_and_amp(monkeypatch, config):
    train = load_tool('train.py')
    args = parse(train, monkeypatch, [config, '--amp', '--auto-scale-lr', '--cfg-options',
                                      'train_cfg.max_epochs=3', 'auto_scale_lr.base_batch_size=4'])
    cfg = train.merge_args(Config.fromfile(config), args)
    assert cfg.train_cfg.max_epochs == 3 and cfg.auto_scale_lr.enable
    expected = 'AmpOptimWrapper' if torch.cuda.is_available() else 'OptimWrapper'
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == expected  # needs a GPU
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = train.merge_args(Config.fromfile(config), args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    with pytest.raises(RuntimeError, match='base_batch_size'):
        train.merge_args(Config.fromfile(config),
                         parse(train, monkeypatch, [config, '--auto-scale-lr']))


def test_test_checkpoint_and_show_dir(monkeypatch, config):
    test = load_tool('test.py')
    cfg = Config.fromfile(config)
    cfg.default_hooks.visualization = dict(type='VisualizationHook', enable=False)
    args = parse(test, monkeypatch, [config, 'c.pth', '--show-dir', 'vis'])
    cfg = test.merge_args(cfg, args)
    assert cfg.load_from == 'c.pth'
    assert cfg.default_hooks.visualization.enable and cfg.default_hooks.visualization.out_dir == 'vis'


def test_test_writes_metrics_json_on_the_main_process_only(monkeypatch, config):
    test = load_tool('test.py')
    cfg = test.merge_args(Config.fromfile(config), parse(test, monkeypatch, [config, 'c.pth']))
    assert cfg.default_hooks.logger == dict(type='RankZeroLoggerHook', interval=1)
    cfg = Config.fromfile(config)
    cfg.default_hooks.logger.type = 'MyLoggerHook'  # a custom hook is left alone
    cfg = test.merge_args(cfg, parse(test, monkeypatch, [config, 'c.pth']))
    assert cfg.default_hooks.logger.type == 'MyLoggerHook'


@pytest.mark.parametrize('tool_name', ['train', 'test'])
def test_checkpoint_option_reaches_pretrained_init_cfg(monkeypatch, tmp_path, tool_name):
    tool = load_tool(f'{tool_name}.py')
    config = tmp_path / 'with_checkpoint.py'
    config.write_text("checkpoint = 'old.pth'\nmodel = dict(backbone=dict(\n"
                      "    type='ResNet', depth=18,\n"
                      "    init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))\n")
    extra = ['c.pth'] if tool_name == 'test' else []
    args = parse(tool, monkeypatch, [config, *extra, '--cfg-options', 'checkpoint=new.pth'])
    cfg = tool.merge_args(Config.fromfile(config), args)
    assert cfg.model.backbone.init_cfg.checkpoint == 'new.pth'


@pytest.mark.parametrize('cuda', [True, False])
def test_config_amp_wrapper_falls_back_to_float32_without_cuda(monkeypatch, config, cuda):
    """The pretraining configs ask for bf16 AmpOptimWrapper, which mmengine refuses on CPU."""
    train = load_tool('train.py')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    args = parse(train, monkeypatch, [config, '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper',
                                      'optim_wrapper.dtype=bfloat16'])
    cfg = train.merge_args(Config.fromfile(config), args)
    if cuda:
        assert (cfg.optim_wrapper.type, cfg.optim_wrapper.dtype) == ('AmpOptimWrapper', 'bfloat16')
    else:
        assert cfg.optim_wrapper.type == 'OptimWrapper' and 'dtype' not in cfg.optim_wrapper


@pytest.mark.parametrize('argv', [
    ['dist_train.sh', 'cfg.py'],
    ['dist_train.sh', 'cfg.py', '--cfg-options', 'a=1'],  # GPUS forgotten
    ['dist_test.sh', 'cfg.py', 'ckpt.pth'],
    ['dist_test.sh', 'cfg.py', 'ckpt.pth', '0'],
])
def test_dist_scripts_need_a_number_of_processes(argv):
    result = subprocess.run(['bash', str(ROOT / 'tools' / argv[0]), *argv[1:]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f'usage: tools/{argv[0]} CONFIG' in result.stderr
    assert 'GPUS (processes per node) must be a positive integer' in result.stderr


@pytest.mark.parametrize('options, expected', [
    (['model.backbone.init_cfg.checkpoint=/data/dense.pth'], '/data/dense.pth'),
    (['checkpoint=/data/dense.pth', 'model.backbone.init_cfg.checkpoint=/data/dense.pth'],
     '/data/dense.pth'),
    (['checkpoint=/data/dense.pth'], '/data/dense.pth'),
])
def test_train_accepts_the_init_cfg_checkpoint_override(monkeypatch, options, expected):
    """mmengine's usual override of a downstream config's pretrained file: the file's own
    consistency is checked before the command line changes it."""
    train = load_tool('train.py')
    config = str(ROOT / 'configs' / 'seg' / 'upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py')
    cfg = train.load_config(parse(train, monkeypatch, [config, '--cfg-options', *options]))
    assert cfg.model.backbone.init_cfg.checkpoint == expected


def test_train_still_stops_a_derived_config_that_resets_checkpoint(monkeypatch, tmp_path):
    train = load_tool('train.py')
    base = ROOT / 'configs' / 'seg' / 'upernet_r50-hgkd-pre_4xb4-160k_ade20k-512x512.py'
    derived = tmp_path / 'derived.py'
    derived.write_text(f"_base_ = {str(base)!r}\ncheckpoint = 'my/dense.pth'\n")
    with pytest.raises(ValueError, match="derived.py sets `checkpoint = 'my/dense.pth'`"):
        train.load_config(parse(train, monkeypatch, [str(derived)]))


@pytest.mark.parametrize('tool_name', ['train', 'test'])
def test_empty_work_dir_is_refused(monkeypatch, capsys, tool_name):
    tool = load_tool(f'{tool_name}.py')
    extra = ['c.pth'] if tool_name == 'test' else []
    monkeypatch.setattr(sys, 'argv', [f'{tool_name}.py', 'cfg.py', *extra, '--work-dir='])
    with pytest.raises(SystemExit) as stop:
        tool.parse_args()
    assert stop.value.code == 2
    assert '--work-dir is empty' in capsys.readouterr().err


@pytest.mark.parametrize('args, env, message', [
    (['part', 'job', 'cfg.py'], {}, 'WORK_DIR must be given'),
    (['part', 'job', 'cfg.py', ''], {}, 'WORK_DIR must be given'),
    (['part', 'job', 'cfg.py', 'work', '0'], {}, "must be a positive integer, got '0'"),
    (['part', 'job', 'cfg.py', 'work'], {'GPUS': 'eight'}, "positive integer, got 'eight'"),
    (['part', 'job', 'cfg.py', 'work', '--resume'], {'GPUS': '0'}, "integer, got '0'"),
])
def test_slurm_train_checks_its_arguments_before_srun(tmp_path, args, env, message):
    """Checked before srun (a stand-in that records any call here)."""
    srun = tmp_path / 'srun'
    srun.write_text(f'#!/bin/sh\ntouch {tmp_path}/srun_called\n')
    srun.chmod(0o755)
    environment = {key: value for key, value in os.environ.items() if key != 'GPUS'}
    environment.update(PATH=f'{tmp_path}:{os.environ["PATH"]}', **env)
    result = subprocess.run(['bash', str(ROOT / 'tools' / 'slurm_train.sh'), *args],
                            env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / 'srun_called').exists()


@pytest.mark.parametrize('out, scope, message', [
    ('preds.json', 'mmpretrain', '--out must be a .pkl file for this config, got preds.json'),
    ('preds.txt', 'mmdet', '--out must be a .pkl file'),
    (None, 'mmdet', None), ('preds.pkl', 'mmdet', None), ('seg_out', 'mmseg', None),
])
def test_out_is_checked_before_anything_is_built(out, scope, message):
    test = load_tool('test.py')
    if message is None:
        test.check_out(out, scope)
    else:
        with pytest.raises(ValueError, match=message):
            test.check_out(out, scope)


def test_mmseg_out_must_not_be_a_file(tmp_path):
    test = load_tool('test.py')
    existing = tmp_path / 'preds.pkl'
    existing.write_bytes(b'')
    with pytest.raises(ValueError, match='is a file: mmseg configs write one image'):
        test.check_out(str(existing), 'mmseg')
