"""dev/gpu_bench.sh with a stand-in python: it checks its settings before installing
anything, passes each run's options to the benchmark, keeps to its time limits and prints
the table."""
import os
import re
import subprocess
import sys
import tarfile

import pytest

from helpers import ROOT

SCRIPT = os.path.join(ROOT, 'dev', 'gpu_bench.sh')


@pytest.mark.parametrize('settings, message', [
    (dict(RUNS='eager bogus'), "RUNS: unknown run 'bogus'"),
    (dict(PROFILE='yes'), "PROFILE must be 0 or 1, got 'yes'"),
    (dict(BUNDLE='results.zip'), "BUNDLE must be a .tgz path outside OUT"),
    (dict(BUNDLE='{out}/all.tgz'), "BUNDLE must be a .tgz path outside OUT"),
    (dict(DEADLINE='9m'), "DEADLINE must be a number of seconds (0: none), got '9m'"),
    (dict(RUN_TIMEOUT='-5'), "RUN_TIMEOUT must be a number of seconds (0: none), got '-5'"),
])
def test_gpu_bench_rejects_bad_settings_before_installing(tmp_path, settings, message):
    settings = {k: v.format(out=tmp_path / 'out') for k, v in settings.items()}
    env = dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON='false', **settings)
    result = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / 'out').exists()


def test_gpu_bench_default_runs_are_known_and_each_known_run_has_a_case():
    """A typo in the run lists would cost a GPU machine's start (the script checks the
    names only once it runs there)."""
    with open(SCRIPT) as f:
        text = f.read()

    def words(start, end):
        block = text[text.index(start) + len(start):]
        return block[:block.index(end)].replace('\\\n', ' ').split()

    default = words('RUNS=${RUNS:-', '}')
    known = words('KNOWN_RUNS=" ', '"')
    cases = re.findall(r'^    ([a-z0-9_]+)\)', text[text.index('case $name in'):], re.M)
    assert default and set(default) <= set(known)
    assert sorted(cases) == sorted(known)


FAKE_BENCHMARK = """
import argparse, json, sys
parser = argparse.ArgumentParser()
parser.add_argument('config')
parser.add_argument('--out')
parser.add_argument('--profile')
parser.add_argument('--no-compile', action='store_true')
parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction)
parser.add_argument('--compile-teacher', action=argparse.BooleanOptionalAction)
parser.add_argument('--compile-mode')
parser.add_argument('--norm-impl', default='torch')
parser.add_argument('--backend')
args, _ = parser.parse_known_args()
import os, time
if os.path.basename(args.out) == os.environ.get('FAKE_SLOW_RUN', '') + '.json':
    print('compiling...', flush=True)
    time.sleep(60)
with open({template!r}) as f:
    result = json.load(f)
from mmengine.config import Config
model = Config.fromfile(args.config).model  # the options default to the config's
backend = args.backend or model.backbone.backend
channels_last = model.get('channels_last', False) if args.channels_last is None \
    else args.channels_last
teacher = model.get('compile_teacher', False) if args.compile_teacher is None \
    else args.compile_teacher
result.update(channels_last=channels_last, norm_impl=args.norm_impl, backend=backend,
              compile=dict(
    requested=not args.no_compile, used=not args.no_compile, mode=args.compile_mode,
    teacher=teacher and not args.no_compile, error=None))
with open(args.out, 'w') as f:
    json.dump(result, f)
"""


def stand_in_python(tmp_path):
    """A python for gpu_bench.sh that logs its arguments and runs FAKE_BENCHMARK."""
    template = os.path.join(ROOT, 'docs', 'bench', 'h100-2026-11-27', 'run2_compiled.json')
    fake = tmp_path / 'fake_benchmark.py'
    fake.write_text(FAKE_BENCHMARK.format(template=template))
    log = tmp_path / 'calls.log'
    stand_in = tmp_path / 'python'
    stand_in.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
case "$1" in
  tools/analysis_tools/benchmark_pretrain.py) shift; exec {sys.executable} {fake} "$@" ;;
  tools/analysis_tools/bench_table.py) exec {sys.executable} "$@" ;;
esac
""")
    stand_in.chmod(0o755)
    return stand_in, log


def test_gpu_bench_time_limits_stop_a_run_and_skip_the_rest(tmp_path):
    stand_in, _ = stand_in_python(tmp_path)
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), PYTHON=str(stand_in), RUNS='compiled eager',
               RUN_TIMEOUT='15', FAKE_SLOW_RUN='compiled')
    result = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert '=== compiled (at most 15 s)' in result.stdout
    assert 'compiled: exit status 124' in (out / 'compiled.log').read_text()
    assert not (out / 'compiled.json').exists() and (out / 'eager.json').exists()
    assert '| eager |' in (out / 'table.md').read_text()

    env.update(OUT=str(tmp_path / 'late'), DEADLINE='20', RUN_TIMEOUT='0')
    result = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert '=== compiled skipped: DEADLINE=20 s' in result.stdout  # under 30 s left
    assert not list((tmp_path / 'late').glob('*.json'))


def test_gpu_bench_runs_each_variant_with_its_options_and_prints_the_table(tmp_path):
    """The script's plumbing, with a stand-in python: each run name reaches the benchmark
    with its options and the shared ones, and the rows printed at the end say so."""
    stand_in, log = stand_in_python(tmp_path)
    out = tmp_path / 'out'
    runs = ('triton_check train_check eager masked_eager eager_triton eager_triton_cl compiled '
            'masked_compiled compiled_nographs masked_nographs compiled_cl compiled_teacher '
            'compiled_plain eager_nchw')
    bundle = tmp_path / 'bundle.tgz'
    env = dict(os.environ, OUT=str(out), PYTHON=str(stand_in), RUNS=runs, ITERS='7',
               WARMUP='2', BUNDLE=str(bundle))
    result = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr

    calls = [line.split() for line in log.read_text().splitlines()
             if 'benchmark_pretrain.py' in line]
    assert len(calls) == 12
    for name, call in zip(runs.split()[2:], calls):
        assert call[1:3] == ['configs/pretrain/hgkd_r50.py', '--device']
        text = ' '.join(call)
        # the Triton kernels are the masked backend's norms
        assert ('--backend masked' in text) == name.startswith(('masked', 'eager_triton'))
        assert ('--device cuda --amp --compare-spark --breakdown --batch-size 128 --iters 7 '
                '--warmup 2 '
                f'--out {out}/{name}.json --profile {out}/{name}.profile.txt') in text
    lines = log.read_text().splitlines()
    assert any('triton_norm_check.py cuda' in line for line in lines)
    assert (f'dev/train_check.py --epochs 1 '
            f'--out {out}/train_check_report.json') in lines
    assert (out / 'train_check.log').read_text().endswith('train_check: exit status 0\n')

    table = (out / 'table.md').read_text()
    assert table in result.stdout
    with tarfile.open(bundle) as packed:  # everything OUT holds, in one file
        assert set(packed.getnames()) == {'.'} | {f'./{p.name}' for p in out.iterdir()}
        assert packed.extractfile('./table.md').read().decode() == table
    assert not os.path.exists(f'{bundle}.part')
    rows = {line.split('|')[1].strip(): line.split('|')[3].strip()
            for line in table.splitlines()[2:]}
    prefix, packed = 'batch 128, bf16, ', ', backend packed, ForeachLamb'
    both = 'compiled, teacher compiled, norm torch, channels_last'  # the config's default
    assert rows == {
        'eager': prefix + 'eager, norm torch, channels_last' + packed,
        'eager_nchw': prefix + 'eager, norm torch' + packed,
        'masked_eager': prefix + 'eager, norm torch, channels_last, ForeachLamb',
        'eager_triton': prefix + 'eager, norm triton, ForeachLamb',
        'eager_triton_cl': prefix + 'eager, norm triton, channels_last, ForeachLamb',
        'compiled': prefix + both + packed,
        'masked_compiled': prefix + both + ', ForeachLamb',
        'compiled_nographs': prefix + both.replace('compiled', 'compiled (default)', 1) + packed,
        'masked_nographs': prefix + both.replace('compiled', 'compiled (default)', 1)
        + ', ForeachLamb',
        'compiled_cl': prefix + 'compiled, norm torch, channels_last' + packed,
        'compiled_teacher': prefix + 'compiled, teacher compiled, norm torch' + packed,
        'compiled_plain': prefix + 'compiled, norm torch' + packed,
    }
