"""dev/train_check.py: three tools/train.py runs on generated images; on
the CPU (no CUDA graphs) it trains and resumes, and its checks fail where they should."""
import importlib.util
import json
import os

import pytest
from helpers import ROOT

DEMO = os.path.join(ROOT, 'configs', 'pretrain',
                    'hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py')


@pytest.fixture(scope='module')
def tool():
    """dev/ is not a package: the script loaded by its path."""
    spec = importlib.util.spec_from_file_location('dev_train_check',
                                                  os.path.join(ROOT, 'dev', 'train_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_config_trains_and_resumes_on_the_cpu(tool, tmp_path):
    out = tmp_path / 'check.json'
    report = tool.main([DEMO, '--images', '8', '--batch-size', '4', '--epochs', '1',
                        '--work-dir', str(tmp_path / 'work'), '--out', str(out)])
    assert report['ok'] and json.loads(out.read_text())['ok']
    assert report['checks'] == dict(trained=True, finite_losses=True, resumed=True)
    assert len(report['train']['losses']) == 2 and len(report['resume']['losses']) == 2
    assert report['cuda_graphs'] is False and 'accumulation' not in report  # CPU: eager
    assert (tmp_path / 'work' / 'runs' / 'epoch_2.pth').is_file()


def fake_runs(tool, monkeypatch, *runs):
    """tools/train.py replaced by ``runs`` in order (each writes its checkpoint); returns
    the ``cfg_options`` each run got."""
    pending = list(runs)
    given = []

    def train(config, work_dir, *options, cfg_options=()):
        given.append(list(cfg_options))
        run = {**dict(seconds=0.0, losses=[1.0], cuda_graphs=False, tail=''), **pending.pop(0)}
        if run['rc'] == 0:
            os.makedirs(work_dir, exist_ok=True)
            epochs = 2 if '--resume' in options else 1
            open(os.path.join(work_dir, f'epoch_{epochs}.pth'), 'w').close()
        return run

    monkeypatch.setattr(tool, 'train', train)
    monkeypatch.setattr(tool, 'check_config', lambda *args: None)
    monkeypatch.setattr(tool, 'make_images', lambda *args: None)
    return given


@pytest.mark.parametrize('accumulation, ok', [
    (dict(rc=1, tail='... set model.cuda_graphs=False ... accumulative_counts ...'), True),
    (dict(rc=0), False),  # accumulating under CUDA graphs must not train
])
def test_accumulation_is_checked_under_cuda_graphs(tool, monkeypatch, tmp_path, capsys,
                                                    accumulation, ok):
    fake_runs(tool, monkeypatch, dict(rc=0, cuda_graphs=True), dict(rc=0), accumulation)
    args = [DEMO, '--images', '4', '--batch-size', '4', '--epochs', '1',
            '--work-dir', str(tmp_path)]
    if ok:
        assert tool.main(args)['checks']['accumulation_refused'] is True
    else:
        with pytest.raises(SystemExit) as stop:
            tool.main(args)
        assert stop.value.code == 1
        assert "'accumulation_refused': False" in capsys.readouterr().out


def test_a_failed_training_fails_the_check(tool, monkeypatch, tmp_path):
    fake_runs(tool, monkeypatch, dict(rc=1, losses=[]), dict(rc=1, losses=[]))
    with pytest.raises(SystemExit) as stop:
        tool.main([DEMO, '--images', '4', '--batch-size', '4', '--work-dir', str(tmp_path)])
    assert stop.value.code == 1


@pytest.mark.parametrize('make', ['file', 'full folder'])
def test_work_dir_must_be_new_or_empty(tool, tmp_path, capsys, make):
    work = tmp_path / 'work'
    if make == 'file':
        work.write_text('')
    else:
        (work / 'runs').mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        tool.main([DEMO, '--work-dir', str(work)])
    assert stop.value.code == 2
    assert f'--work-dir {work}: give a new or empty folder' in capsys.readouterr().err


def test_cfg_options_reach_every_run(tool, monkeypatch, tmp_path):
    given = fake_runs(tool, monkeypatch, dict(rc=0, cuda_graphs=True), dict(rc=0),
                      dict(rc=1, tail='accumulative_counts'))
    report = tool.main([DEMO, '--images', '4', '--batch-size', '4', '--epochs', '1',
                        '--work-dir', str(tmp_path), '--cfg-options', 'model.channels_last=True',
                        'model.compile_teacher=True'])
    options = ['model.channels_last=True', 'model.compile_teacher=True']
    assert report['ok'] and report['cfg_options'] == options
    assert given == [options, options + ['train_cfg.max_epochs=2'],
                     options + ['optim_wrapper.accumulative_counts=2']]


def test_train_passes_one_cfg_options_list(tool, monkeypatch):
    """tools/train.py keeps only the last --cfg-options it is given: one list."""
    commands = []
    monkeypatch.setattr(tool.subprocess, 'run', lambda command, **kwargs: commands.append(
        command) or tool.subprocess.CompletedProcess(command, 0, '', ''))
    tool.train('c.py', 'w', '--resume', 'e.pth', cfg_options=['a=1', 'b=2'])
    tool.train('c.py', 'w')
    assert commands[0][2:] == ['c.py', '--work-dir', 'w', '--resume', 'e.pth',
                               '--cfg-options', 'a=1', 'b=2']
    assert '--cfg-options' not in commands[1]


def test_bad_cfg_option_is_named(tool, capsys):
    with pytest.raises(SystemExit) as stop:
        tool.main([DEMO, '--cfg-options', 'model.channels_last'])
    assert stop.value.code == 2
    assert "--cfg-options: 'model.channels_last' is not KEY=VALUE" in capsys.readouterr().err
