"""tools/analysis_tools/benchmark_pretrain.py on a tiny config: it runs and reports."""
import json
import os
import re
import subprocess
import sys
import tarfile
import types

import pytest
import torch
from helpers import ROOT, load_tool, tiny_hgkd_cfg


TINY_CONFIG = f"""
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = {tiny_hgkd_cfg()!r}
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04),
                     clip_grad=dict(max_norm=5.0))
"""


@pytest.fixture
def tool():
    threads = torch.get_num_threads()
    yield load_tool('analysis_tools/benchmark_pretrain.py')
    torch.set_num_threads(threads)


def test_tiny_run_writes_sane_json(tool, tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'result.json'
    tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '2',
               '--warmup', '1', '--threads', '1', '--compare-spark', '--out', str(out)])
    result = json.loads(out.read_text())

    assert result['device'] == 'cpu' and result['device_name']
    assert result['torch'] == torch.__version__ and result['mmpretrain']
    assert 'triton' in result  # the version, or None without triton
    assert (result['batch_size'], result['img_size'], result['amp']) == (2, 64, 'fp32')
    assert result['backend'] == 'masked' and result['teacher_input_mode'] == 'full'
    assert result['threads'] == 1 and result['compile']['used'] is False
    for key in ('hgkd', 'composition'):
        assert result[key]['img_per_s'] > 0 and result[key]['iters'] == 2
    assert result['hgkd']['peak_rss_mib'] > 0
    assert result['composition']['spark_depth'] == 18
    assert result['ratio_img_per_s'] > 0
    assert {'graphs', 'cudagraph_skips'} <= set(result['compile'])


def test_variants_reach_the_model(tool, tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    result = tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '1',
                        '--warmup', '0', '--threads', '1', '--teacher-input-mode', 'masked',
                        '--channels-last', '--norm-impl', 'triton'])
    assert result['teacher_input_mode'] == 'masked' and result['channels_last'] is True
    assert result['norm_impl'] == 'triton'  # asked for; on the CPU it runs the torch ops
    assert {k: result['compile'][k] for k in ('requested', 'used', 'mode', 'teacher', 'error')
            } == dict(requested=False, used=False, mode=None, teacher=False, error=None)
    assert 'composition' not in result and result['hgkd']['img_per_s'] > 0


@pytest.mark.parametrize('options, named', [
    (['--compile-teacher'], '--compile-teacher'),  # the CPU default is eager
    (['--compile-mode', 'default'], '--compile-mode'),
    (['--compile', '--compile-mode', 'fast'], '--compile-mode'),
])
def test_compile_options_are_checked(tool, tmp_path, capsys, options, named):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    with pytest.raises(SystemExit):
        tool.main([str(config), '--device', 'cpu', *options])
    assert named in capsys.readouterr().err


@pytest.mark.parametrize('compiled, mode, expected', [
    (True, None, dict(compile=True, cuda_graphs=True)),  # the config's CUDA graphs
    (True, 'default', dict(compile=dict(mode='default'), cuda_graphs=False)),  # the mode given
    (False, None, dict(compile=False, cuda_graphs=False)),  # eager: True would be refused
])
def test_compile_mode_replaces_the_config_cuda_graphs(tool, monkeypatch, compiled, mode,
                                                       expected):
    built = []

    def stop(cfg, device):
        built.append(cfg)
        raise KeyError('built')

    monkeypatch.setattr(tool, 'build_model', stop)
    with pytest.raises(KeyError, match='built'):
        tool.warm_up_hgkd(types.SimpleNamespace(device='cuda'),
                          dict(type='HGKD', cuda_graphs=True), compiled, 1, 0, mode)
    assert {key: built[0][key] for key in expected} == expected


def test_reserved_during_is_the_allocator_growth_of_the_warm_up(tool, monkeypatch):
    assert tool.reserved_during(torch.device('cpu'), lambda: 'done') == ('done', None)
    reserved = dict(now=100 * tool.MIB, peak=0)
    for name in ('synchronize', 'reset_peak_memory_stats'):
        monkeypatch.setattr(torch.cuda, name, lambda: None)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: reserved.update(now=60 * tool.MIB))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', lambda: reserved['now'])
    monkeypatch.setattr(torch.cuda, 'max_memory_reserved', lambda: reserved['peak'])

    def warm_up():  # a CUDA-graph pool of 250 MiB over the 60 MiB kept
        reserved.update(peak=310 * tool.MIB)
        return 'model'

    assert tool.reserved_during(torch.device('cuda'), warm_up) == ('model', 250.0)


@pytest.mark.parametrize('hgkd_reserved, expected', [(300.0, 0.5), (None, None)])
def test_reserved_ratio_of_the_warm_up_footprints(tool, hgkd_reserved, expected):
    result = dict(device='cuda', hgkd=dict(img_per_s=20.0, peak_memory_mib=100.0,
                                           warmup_reserved_mib=hgkd_reserved))
    tool.add_comparison(result, dict(img_per_s=10.0, peak_memory_mib=400.0,
                                     warmup_reserved_mib=600.0), 50)
    assert (result['ratio_img_per_s'], result['memory_ratio']) == (2.0, 0.25)
    assert result.get('reserved_ratio') == expected


def test_breakdown_times_each_part_alone(tool, tmp_path, capsys, monkeypatch):
    """--breakdown runs each part (teacher forward, student forward + backward, clip +
    optimizer) iters + 1 times on its own and reports positive medians."""
    calls = dict(teacher=0, student=0, step=0)
    strides = dict(teacher=set(), student=set())  # of the tokens: others would recompile
    real_breakdown = tool.breakdown

    def counting_breakdown(model, optimizer, bench, iters):
        teacher, student, step = model.teacher.forward, model._student_step, optimizer.step

        def count(name, function):
            def counted(*args, **kwargs):
                calls[name] += 1
                result = function(*args, **kwargs)
                tokens = result if name == 'teacher' else args[2] if name == 'student' else []
                strides.get(name, set()).update(t.stride() for t in tokens)
                return result
            return counted

        model.teacher.forward = count('teacher', teacher)  # what model.teacher(...) calls
        model._student_step = count('student', student)
        monkeypatch.setattr(optimizer, 'step', count('step', step))
        result = real_breakdown(model, optimizer, bench, iters)
        assert all(p.grad is None for p in model.parameters())  # left as a step leaves them
        return result

    monkeypatch.setattr(tool, 'breakdown', counting_breakdown)
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'result.json'
    result = tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '3',
                        '--warmup', '1', '--threads', '1', '--breakdown', '--out', str(out)])
    assert calls == dict(teacher=1 + 4, student=4, step=4)  # tokens once, then 3 + 1 each
    # mmpretrain's ViT returns a view without the class token: a plain clone() would be
    # contiguous, and a compiled student would be compiled again for it
    assert strides['student'] == strides['teacher'] and len(strides['teacher']) == 1
    parts = json.loads(out.read_text())['breakdown']
    assert parts == result['breakdown'] and parts['iters'] == 3
    names = ('teacher_forward_ms', 'student_forward_backward_ms', 'clip_and_optimizer_ms')
    assert all(parts[name] > 0 for name in names)
    assert parts['sum_ms'] == pytest.approx(sum(parts[name] for name in names))
    assert 'H-GKD parts alone (ms): teacher forward' in capsys.readouterr().out


def test_breakdown_with_the_teacher_inside(tool, tmp_path, capsys, monkeypatch):
    """With model.compile_teacher the student's part is the compiled function's: teacher
    and student, and the sum counts the teacher once."""
    monkeypatch.setattr(torch, 'compile',  # a new function that runs eager: "compiled"
                        lambda function, **options: lambda *args: function(*args))
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    result = tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '2',
                        '--warmup', '1', '--threads', '1', '--compile', '--compile-teacher',
                        '--breakdown'])
    assert result['compile']['used'] and result['compile']['teacher']
    parts = result['breakdown']
    assert parts['student_part'] == 'teacher + student'
    assert parts['sum_ms'] == pytest.approx(parts['student_forward_backward_ms']
                                            + parts['clip_and_optimizer_ms'])
    assert 'teacher + student forward + backward' in capsys.readouterr().out


def test_results_are_written_before_the_breakdown_and_profile(tool, tmp_path, monkeypatch):
    def failing_breakdown(*args):
        raise RuntimeError('breakdown failed')

    monkeypatch.setattr(tool, 'breakdown', failing_breakdown)
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'result.json'
    with pytest.raises(RuntimeError, match='breakdown failed'):
        tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '1',
                   '--warmup', '0', '--threads', '1', '--breakdown', '--out', str(out)])
    assert json.loads(out.read_text())['hgkd']['img_per_s'] > 0


def test_gpu_busy_time_counts_each_kernel_once(tool):
    """torch.profiler lists a kernel in its own row and again as the self device time of
    the op that launched it; annotations (the optimizer step) span other kernels."""
    from types import SimpleNamespace
    from torch.autograd import DeviceType

    def row(key, device, cpu_us=0, device_us=0, count=1, annotation=False):
        return SimpleNamespace(key=key, device_type=device, self_cpu_time_total=cpu_us,
                               self_device_time_total=device_us, count=count,
                               is_user_annotation=annotation)

    events = [row('aten::convolution', DeviceType.CPU, 300, 2000, count=2),
              row('cudaLaunchKernel', DeviceType.CPU, 40, count=5),
              row('Optimizer.step#AdamW.step', DeviceType.CPU, 10, annotation=True),
              row('Optimizer.step#AdamW.step', DeviceType.CUDA, 0, 9000, annotation=True),
              row('sm90_xmma_fprop', DeviceType.CUDA, 0, 2000, count=2),
              row('vectorized_elementwise', DeviceType.CUDA, 0, 500, count=3)]
    totals = tool.profile_totals(events, cuda=True)
    assert totals['total_ms_per_step'] == pytest.approx(2.5)  # kernel rows only
    assert totals['kernel_launches_per_step'] == 5
    assert totals['cpu_ms_per_step'] == pytest.approx(0.34)
    assert [e.key for e in totals['ops']] == ['aten::convolution', 'cudaLaunchKernel']
    assert [e.key for e in totals['kernels']] == ['sm90_xmma_fprop', 'vectorized_elementwise']


def test_profile_writes_the_op_table(tool, tmp_path):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    table = tmp_path / 'profile.txt'
    result = tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '1',
                        '--warmup', '0', '--threads', '1', '--profile', str(table)])
    profile = result['profile']
    assert profile['table'] == str(table) and 'aten::convolution' in table.read_text()
    assert profile['steps'] == 3 and 0 < profile['total_ms_per_step']
    assert 0 < profile['cpu_ms_per_step'] and 'kernel_launches_per_step' not in profile  # CPU
    names = [op['name'] for op in profile['top']]
    assert len(names) == 30 and any('conv' in name for name in names)
    times = [op['ms_per_step'] for op in profile['top']]
    assert times == sorted(times, reverse=True) and sum(times) <= profile['total_ms_per_step']


@pytest.mark.parametrize('settings, message', [
    (dict(RUNS='eager bogus'), "RUNS: unknown run 'bogus'"),
    (dict(PROFILE='yes'), "PROFILE must be 0 or 1, got 'yes'"),
    (dict(BUNDLE='results.zip'), "BUNDLE must be a .tgz path outside OUT"),
    (dict(BUNDLE='{out}/all.tgz'), "BUNDLE must be a .tgz path outside OUT"),
    (dict(DEADLINE='9m'), "DEADLINE must be a number of seconds (0: none), got '9m'"),
    (dict(RUN_TIMEOUT='-5'), "RUN_TIMEOUT must be a number of seconds (0: none), got '-5'"),
])
def test_gpu_bench_rejects_bad_settings_before_installing(tmp_path, settings, message):
    script = os.path.join(ROOT, 'tools', 'analysis_tools', 'gpu_bench.sh')
    settings = {k: v.format(out=tmp_path / 'out') for k, v in settings.items()}
    env = dict(os.environ, OUT=str(tmp_path / 'out'), PYTHON='false', **settings)
    result = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / 'out').exists()


def test_gpu_bench_default_runs_are_known_and_each_known_run_has_a_case():
    """A typo in the run lists would cost a GPU machine's start (the script checks the
    names only once it runs there)."""
    with open(os.path.join(ROOT, 'tools', 'analysis_tools', 'gpu_bench.sh')) as f:
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
    script = os.path.join(ROOT, 'tools', 'analysis_tools', 'gpu_bench.sh')
    stand_in, _ = stand_in_python(tmp_path)
    out = tmp_path / 'out'
    env = dict(os.environ, OUT=str(out), PYTHON=str(stand_in), RUNS='compiled eager',
               RUN_TIMEOUT='15', FAKE_SLOW_RUN='compiled')
    result = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert '=== compiled (at most 15 s)' in result.stdout
    assert 'compiled: exit status 124' in (out / 'compiled.log').read_text()
    assert not (out / 'compiled.json').exists() and (out / 'eager.json').exists()
    assert '| eager |' in (out / 'table.md').read_text()

    env.update(OUT=str(tmp_path / 'late'), DEADLINE='20', RUN_TIMEOUT='0')
    result = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert '=== compiled skipped: DEADLINE=20 s' in result.stdout  # under 30 s left
    assert not list((tmp_path / 'late').glob('*.json'))


def test_gpu_bench_runs_each_variant_with_its_options_and_prints_the_table(tmp_path):
    """The script's plumbing, with a stand-in python: each run name reaches the benchmark
    with its options and the shared ones, and the rows printed at the end say so."""
    script = os.path.join(ROOT, 'tools', 'analysis_tools', 'gpu_bench.sh')
    stand_in, log = stand_in_python(tmp_path)
    out = tmp_path / 'out'
    runs = ('triton_check train_check eager masked_eager eager_triton eager_triton_cl compiled '
            'masked_compiled compiled_nographs masked_nographs compiled_cl compiled_teacher '
            'compiled_session12 eager_nchw')
    bundle = tmp_path / 'bundle.tgz'
    env = dict(os.environ, OUT=str(out), PYTHON=str(stand_in), RUNS=runs, ITERS='7',
               WARMUP='2', BUNDLE=str(bundle))
    result = subprocess.run(['bash', script], env=env, capture_output=True, text=True,
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
    assert (f'tools/analysis_tools/train_check.py --epochs 1 '
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
        'compiled_session12': prefix + 'compiled, norm torch' + packed,
    }


@pytest.mark.parametrize('args, message', [
    (['--variants', 'masked,bogus'], "--variants: unknown ['bogus']"),
    (['0'], 'argument iters'),
])
def test_benchmark_variants_names_bad_arguments_before_building(args, message):
    script = os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark_variants.py')
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert message in result.stderr
