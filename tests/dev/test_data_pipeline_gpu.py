"""dev/data_pipeline_gpu.sh with a stand-in python (pip logged, not run): it checks its
settings before installing or writing anything, prepare makes COCO-size JPEGs within the
size limit, and run times each loader's config and prints the table."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT

SCRIPT = os.path.join(ROOT, 'dev', 'data_pipeline_gpu.sh')

FAKE_BENCHMARK = """
import argparse, json, os, sys
from mmengine.config import Config
parser = argparse.ArgumentParser()
parser.add_argument('config')
for name in ('--batch-size', '--iters', '--warmup', '--workers'):
    parser.add_argument(name, type=int)
parser.add_argument('--data')
parser.add_argument('--out')
args = parser.parse_args()
if args.out.endswith(os.environ.get('FAKE_FAIL', '-') + '.json'):  # crashed while writing
    open(args.out, 'w').close()
    sys.exit(1)
cfg = Config.fromfile(args.config)  # the config as the benchmark reads it
data = dict(step_img_per_s=3000.0, runner=dict(img_per_s=2850.0, data_wait=0.02),
            runner_vs_step=0.95, loader=dict(config=dict(img_per_s=400.0)))
preprocessor = cfg.model.get('data_preprocessor') or cfg.data_preprocessor  # as the Runner
result = dict(args=vars(args), data=data, preprocessor=preprocessor.get('type'),
              pipeline=[t['type'] for t in cfg.train_dataloader.dataset.pipeline])
with open(args.out, 'w') as f:
    json.dump(result, f)
"""


def stand_in_python(tmp_path):
    """A python that logs its arguments, answers pip with success without running it, runs
    FAKE_BENCHMARK for the benchmark and the real interpreter for the rest."""
    fake = tmp_path / 'fake_benchmark.py'
    fake.write_text(FAKE_BENCHMARK)
    log = tmp_path / 'calls.log'
    stand_in = tmp_path / 'python'
    stand_in.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
case "$1" in
  -m) exit 0 ;;
  tools/analysis_tools/benchmark_pretrain.py) shift; exec {sys.executable} {fake} "$@" ;;
  *) exec {sys.executable} "$@" ;;
esac
""")
    stand_in.chmod(0o755)
    return stand_in, log


def script(tmp_path, command, **settings):
    env = dict(os.environ, **dict(dict(OUT=str(tmp_path / 'out'), PYTHON='false'), **settings))
    return subprocess.run(['bash', SCRIPT, command], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('command, settings, message', [
    ('run', dict(LOADERS='fast bogus'), "LOADERS: unknown loader 'bogus'"),
    ('run', dict(LOADERS=' '), 'LOADERS is empty'),
    ('run', dict(BATCH='0'), "BATCH must be a positive integer, got '0'"),
    ('run', dict(WORKERS='many'), "WORKERS must be a positive integer, got 'many'"),
    ('run', dict(WARMUP='-1'), "WARMUP must be a non-negative integer, got '-1'"),
    ('run', dict(RUN_TIMEOUT='5m'), "RUN_TIMEOUT must be a number of seconds"),
    ('run', dict(DATA='{tmp}/missing'), 'no .jpg files in it'),
    ('prepare', dict(MIB='0'), "MIB must be a positive integer, got '0'"),
    ('prepare', dict(SRC='{tmp}'), 'no coco-tiny and imagenet-sample folders in it'),
    ('bench', dict(), 'usage: bash dev/data_pipeline_gpu.sh prepare|run'),
])
def test_rejects_bad_settings_before_installing(tmp_path, command, settings, message):
    settings = {k: v.format(tmp=tmp_path) for k, v in settings.items()}
    result = script(tmp_path, command, **settings)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / 'out').exists()


def test_prepare_makes_coco_size_jpegs_within_the_limit(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / 'shared'
    (src / 'coco-tiny' / 'train2017').mkdir(parents=True)
    (src / 'imagenet-sample' / 'n01').mkdir(parents=True)
    for i in range(2):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / 'coco-tiny' / 'train2017' / f'{i}.jpg')
    for i in range(12):  # noise: about 0.3 MiB each, enlarged to 480 x 720
        pixels = rng.integers(0, 255, (240, 360, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / 'imagenet-sample' / 'n01' / f'n01_{i}.JPEG')
    stand_in, log = stand_in_python(tmp_path)
    data = tmp_path / 'jpegs'
    result = script(tmp_path, 'prepare', PYTHON=str(stand_in), SRC=str(src), DATA=str(data),
                    MIB='1')
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(data))
    for i in range(2):  # the COCO photos as they are
        assert (data / f'{i}.jpg').read_bytes() == \
            (src / 'coco-tiny' / 'train2017' / f'{i}.jpg').read_bytes()
    enlarged = [n for n in names if n.startswith('in_')]
    assert 0 < len(enlarged) < 12  # stopped at the limit
    for name in enlarged:
        with Image.open(data / name) as image:
            assert image.format == 'JPEG' and image.size == (720, 480)
    assert sum((data / n).stat().st_size for n in names) <= 2**20
    assert '-m pip download --no-deps --only-binary :all: --python-version 3.12' \
        in log.read_text()


def test_run_times_each_loader_and_prints_the_table(tmp_path):
    data = tmp_path / 'jpegs'
    data.mkdir()
    Image.new('RGB', (64, 48)).save(data / 'a.jpg')
    stand_in, log = stand_in_python(tmp_path)
    out = tmp_path / 'out'
    result = script(tmp_path, 'run', PYTHON=str(stand_in), DATA=str(data), BATCH='32',
                    ITERS='4', WARMUP='1', WORKERS='3')
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert '-m pip install --no-index --no-deps --no-build-isolation -e .' in calls
    loaded = {}
    for loader in ('fast', 'gpu', 'mmpretrain'):
        run = json.loads((out / f'{loader}.json').read_text())
        assert run['args'] == dict(config=run['args']['config'], batch_size=32, iters=4,
                                   warmup=1, workers=3, data=str(data),
                                   out=str(out / f'{loader}.json'))
        loaded[loader] = (run['pipeline'], run['preprocessor'])
    assert loaded['fast'][0] == ['LoadRandomResizedCrop', 'PackInputs']
    assert loaded['gpu'] == (['LoadJpegCropParams', 'PackInputs'], 'JpegDecodeDataPreprocessor')
    assert loaded['mmpretrain'] == (['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
                                     'PackInputs'], loaded['fast'][1])
    lines = result.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith('loader  '))):]
    assert [row.split()[0] for row in table[1:]] == ['fast', 'gpu', 'mmpretrain']
    assert table[1].split()[1:] == ['3000', '2850', '0.950', '2.0%', '400']

    # a loader whose run fails leaves its row empty; the others are kept
    result = script(tmp_path, 'run', PYTHON=str(stand_in), DATA=str(data), FAKE_FAIL='gpu',
                    LOADERS='gpu fast', OUT=str(tmp_path / 'again'))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [
        'gpu          (no result)', table[1]]
