"""The analysis tools refuse bad numbers by option name, and their JSON outputs are
never left half-written."""
import json
import os
from pathlib import Path

import pytest
import torch

from hgkd_mm.utils.cli import (dump_json, image_size, json_path, non_negative_int,
                               open_fraction, positive_int)
from helpers import load_tool

TOOLS = Path(__file__).resolve().parents[2] / 'tools' / 'analysis_tools'


def test_value_types():
    assert positive_int('3') == 3 and non_negative_int('0') == 0 and open_fraction('0.2') == 0.2
    assert image_size('224') == 224
    for parse, text in ((positive_int, '0'), (non_negative_int, '-1'), (open_fraction, '1'),
                        (open_fraction, '0'), (image_size, '100'), (image_size, '0')):
        with pytest.raises(Exception, match='got'):
            parse(text)


def test_dump_json_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / 'sub' / 'result.json'
    dump_json(str(out), dict(a=1))
    assert json.loads(out.read_text()) == dict(a=1)
    with pytest.raises(TypeError):
        dump_json(str(out), dict(a=object()))  # fails half-way through the write
    assert json.loads(out.read_text()) == dict(a=1)
    assert os.listdir(out.parent) == ['result.json']  # no temporary file left


def test_json_path_is_checked_before_the_work(tmp_path):
    assert json_path(str(tmp_path / 'new' / 'deeper' / 'out.json'))  # folders to be made
    blocker = tmp_path / 'file'
    blocker.write_text('')
    for text, message in ((str(tmp_path), 'is a folder'), (f'{tmp_path}/new/', 'is a folder'),
                          (str(blocker / 'out.json'), 'is not a writable folder')):
        with pytest.raises(Exception, match=message):
            json_path(text)


BAD_ARGS = {
    'benchmark_pretrain': (['cfg.py'], [
        ('--batch-size', '0'), ('--iters', '0'), ('--warmup', '-1'), ('--threads', '0'),
        ('--img-size', '100'), ('--spark-depth', '7'), ('--out', '/')]),
    'probe': (['random', '--data', '.'], [
        ('--batch-size', '0'), ('--epochs', '0'), ('--split', '1.5'), ('--img-size', '-8'),
        ('--lr', '0'), ('--device', 'tpu'), ('--out', '/')]),
    'compare_pretraining': ([], [
        ('--student-epochs', '0'), ('--workers', '-1'), ('--mae-batch-size', '0'),
        ('--img-size', '100'),
        ('--probe-classes', '0'), ('--pretrain-seed', '-1')]),
}


@pytest.mark.parametrize('name', sorted(BAD_ARGS))
def test_tools_name_the_bad_option(name, capsys):
    tool = load_tool(f'analysis_tools/{name}.py')
    base, cases = BAD_ARGS[name]
    if not torch.cuda.is_available():
        cases = cases + [('--device', 'cuda')] if name != 'compare_pretraining' else cases
    for option, value in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.parse_args(base + [option, value])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert option in error, (option, value, error)
    tool.parse_args(base)  # the defaults pass


@pytest.mark.parametrize('name', ['benchmark_pretrain', 'count_step_ops'])
def test_benchmarks_refuse_a_config_that_is_not_hgkd(name):
    spark = str(TOOLS.parents[1] / 'configs' / 'pretrain' /
                'spark_resnet18_1xb32-6e_imagenet-sample-128px.py')
    with pytest.raises(SystemExit, match="is not an H-GKD config: its model.type is 'SparK'"):
        load_tool(f'analysis_tools/{name}.py').main([spark, '--batch-size', '1'])


def test_benchmark_refuses_triton_norms_without_the_masked_backend():
    """The paper config's backend is packed, whose norms are BatchNorm2d: stopped before any
    model is built, with the option to add."""
    paper = str(TOOLS.parents[1] / 'configs' / 'pretrain' / 'hgkd_r50.py')
    with pytest.raises(SystemExit, match="--norm-impl triton.*'packed': add --backend masked"):
        load_tool('analysis_tools/benchmark_pretrain.py').main([paper, '--norm-impl', 'triton'])
