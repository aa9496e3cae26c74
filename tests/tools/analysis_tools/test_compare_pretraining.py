"""tools/analysis_tools/compare_pretraining.py --smoke runs end to end and resumes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_tool
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = ROOT.parent / 'shared' / 'data'
METHODS = ['H-GKD ResNet-18', 'SparK ResNet-18', 'random ResNet-18', 'MAE ViT teacher']

pytestmark = pytest.mark.skipif(not (SHARED_DATA / 'caltech101' / 'train').is_dir(),
                                reason='needs ../shared/data (imagenet-sample, caltech101)')


def run_compare(work_dir: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='2')
    completed = subprocess.run(
        [sys.executable, 'tools/analysis_tools/compare_pretraining.py', '--smoke',
         '--work-dir', str(work_dir), *extra], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=900)
    assert (completed.returncode == 0) == ok, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def test_smoke_end_to_end_then_resume(tmp_path):
    work_dir = tmp_path / 'compare'
    first = run_compare(work_dir)

    summary = json.loads((work_dir / 'results.json').read_text())
    assert [row['method'] for row in summary['rows']] == METHODS
    for row in summary['rows']:
        assert 0 <= row['linear']['top1_mean'] <= 100
        assert [run['seed'] for run in row['linear']['runs']] == [0]
    hgkd, spark = summary['rows'][:2]
    assert hgkd['steps'] == spark['steps'] == 2  # same student steps: 8 images, batch 4
    for stage in ('mae/epoch_1.pth', 'hgkd/epoch_1.pth', 'spark/epoch_1.pth'):
        assert (work_dir / stage).is_file()
    assert "_base_ = ['" + str(ROOT / 'configs' / 'pretrain') in (
        work_dir / 'configs' / 'spark.py').read_text()

    table = (work_dir / 'results.md').read_text()
    assert all(f'| {method} |' in table for method in METHODS)
    assert summary['table'] in first.stdout

    second = run_compare(work_dir)  # every stage and probe is reused
    assert second.stdout.count('exists, skipped') == 3
    assert second.stdout.count('reused') == 4
    resumed = json.loads((work_dir / 'results.json').read_text())
    assert resumed['table'] == summary['table']
    assert resumed['stage_seconds'] == summary['stage_seconds']  # timings of the first run
    assert all(seconds > 0 for seconds in summary['stage_seconds'].values())

    # a loss-target variant reuses the teacher and trains and probes H-GKD only
    variant = tmp_path / 'variant'
    third = run_compare(variant, '--reuse-from', str(work_dir), '--methods', 'hgkd',
                        '--hgkd-options', 'model.head.loss_on=all')
    assert (variant / 'mae').is_symlink() and third.stdout.count('exists, skipped') == 1
    assert "'loss_on': 'all'" in (variant / 'configs' / 'hgkd.py').read_text()
    rows = json.loads((variant / 'results.json').read_text())['rows']
    assert [row['method'] for row in rows] == METHODS[:1]

    # a given teacher: no MAE stage; the students' steps timed side by side; test part
    given = tmp_path / 'given_teacher'
    fourth = run_compare(given, '--teacher', str(work_dir / 'mae' / 'epoch_1.pth'),
                         '--teacher-config', str(work_dir / 'configs' / 'mae.py'),
                         '--methods', 'hgkd', 'spark', '--time-steps', '1',
                         '--eval-split', 'test')
    assert not (given / 'mae').exists() and 'timing the H-GKD and SparK steps' in fourth.stdout
    summary = json.loads((given / 'results.json').read_text())
    assert summary['eval_split'] == 'test'
    assert all(row['step_s'] > 0 for row in summary['rows'])
    assert 'x 2)' in summary['table']  # seconds per step x 2 steps
    assert (given / 'probe' / 'hgkd_linear_test.json').is_file()
    missing = run_compare(tmp_path / 'missing', '--teacher', str(tmp_path / 'none.pth'), ok=False)
    assert '--teacher: no file' in missing.stderr

    # the first work dir's H-GKD stage was trained with other options: not reused
    changed = run_compare(work_dir, '--methods', 'hgkd', '--hgkd-options',
                          'model.head.loss_on=all', ok=False)
    assert f'hgkd: {work_dir}/hgkd was trained with other settings' in changed.stderr
    assert (work_dir / 'hgkd' / 'epoch_1.pth').is_file()

    not_a_run = run_compare(tmp_path / 'bad', '--reuse-from', str(tmp_path), ok=False)
    assert '--reuse-from' in not_a_run.stderr and 'settings.json' in not_a_run.stderr


def test_pretrain_seed_sets_every_stage_seed(tmp_path):
    """``--pretrain-seed`` is another run of the same recipe: the three stage configs get
    ``randomness.seed``; without it they keep the repo configs' seed."""
    tool = load_tool('analysis_tools/compare_pretraining.py')
    pool = str(tmp_path / 'pool.txt')
    for seed in (None, 3):
        work_dir = tmp_path / f'seed_{seed}'
        argv = ['--work-dir', str(work_dir)] + ([] if seed is None else
                                                ['--pretrain-seed', str(seed)])
        configs = tool.write_configs(tool.parse_args(argv), pool)
        for name in ('mae', 'hgkd', 'spark'):
            assert Config.fromfile(configs[name]).randomness.seed == (seed or 0), name
