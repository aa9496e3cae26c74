"""tools/analysis_tools/benchmark_pretrain.py on a tiny config: it runs and reports."""
import json
import types

import pytest
import torch

from hgkd_mm.benchmark import profiling, step_bench
from helpers import load_tool, tiny_hgkd_cfg


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


def test_convnext_student_is_compared_with_sparks_convnext(tool, tmp_path):
    student = dict(type='HGKDSparseConvNeXt', arch=dict(depths=[1, 1, 1, 1],
                                                         channels=[8, 16, 32, 64]))
    config = tmp_path / 'tiny_convnext.py'
    config.write_text(TINY_CONFIG.replace(repr(tiny_hgkd_cfg()),
                                          repr(tiny_hgkd_cfg(backbone=student))))
    out = tmp_path / 'result.json'
    tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '1',
               '--warmup', '1', '--threads', '1', '--compare-spark', '--out', str(out),
               '--cfg-options', 'model.neck.in_channels=[8,16,32,64]'])
    result = json.loads(out.read_text())
    assert result['student'] == 'HGKDSparseConvNeXt' and result['student_depth'] is None
    assert result['composition']['spark_config'] == step_bench.SPARK_CONVNEXT_CONFIG
    assert result['composition']['spark_depth'] is None and result['ratio_img_per_s'] > 0
    spark = step_bench.spark_model_cfg(64, None, student)
    assert spark['backbone']['type'] == 'SparseConvNeXt'
    assert (spark['backbone']['arch'], spark['enc_dec_norm_dim']) == (student['arch'], 64)


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

    monkeypatch.setattr(step_bench, 'build_model', stop)
    with pytest.raises(KeyError, match='built'):
        step_bench.warm_up_hgkd(types.SimpleNamespace(device='cuda'),
                          dict(type='HGKD', cuda_graphs=True), compiled, 1, 0, mode)
    assert {key: built[0][key] for key in expected} == expected


def test_reserved_during_is_the_allocator_growth_of_the_warm_up(tool, monkeypatch):
    assert step_bench.reserved_during(torch.device('cpu'), lambda: 'done') == ('done', None)
    reserved = dict(now=100 * step_bench.MIB, peak=0)
    for name in ('synchronize', 'reset_peak_memory_stats'):
        monkeypatch.setattr(torch.cuda, name, lambda: None)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: reserved.update(now=60 * step_bench.MIB))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', lambda: reserved['now'])
    monkeypatch.setattr(torch.cuda, 'max_memory_reserved', lambda: reserved['peak'])

    def warm_up():  # a CUDA-graph pool of 250 MiB over the 60 MiB kept
        reserved.update(peak=310 * step_bench.MIB)
        return 'model'

    assert step_bench.reserved_during(torch.device('cuda'), warm_up) == ('model', 250.0)


@pytest.mark.parametrize('hgkd_reserved, expected', [(300.0, 0.5), (None, None)])
def test_reserved_ratio_of_the_warm_up_footprints(tool, hgkd_reserved, expected):
    result = dict(device='cuda', hgkd=dict(img_per_s=20.0, peak_memory_mib=100.0,
                                           warmup_reserved_mib=hgkd_reserved))
    step_bench.add_comparison(result, dict(img_per_s=10.0, peak_memory_mib=400.0,
                                     warmup_reserved_mib=600.0), 50)
    assert (result['ratio_img_per_s'], result['memory_ratio']) == (2.0, 0.25)
    assert result.get('reserved_ratio') == expected


def test_breakdown_times_each_part_alone(tool, tmp_path, capsys, monkeypatch):
    """--breakdown runs each part (teacher forward, student forward + backward, clip +
    optimizer) iters + 1 times on its own and reports positive medians."""
    calls = dict(teacher=0, student=0, step=0)
    strides = dict(teacher=set(), student=set())  # of the tokens: others would recompile
    real_breakdown = step_bench.breakdown

    def counting_breakdown(model, optimizer, bench, iters):
        teacher, step = model.teacher.forward, optimizer.step
        student = model.compiled_step.compiled_part

        def count(name, function):
            def counted(*args, **kwargs):
                calls[name] += 1
                result = function(*args, **kwargs)
                tokens = (result if name == 'teacher' else kwargs['teacher_output']
                          if name == 'student' else [])
                strides.get(name, set()).update(t.stride() for t in tokens)
                return result
            return counted

        model.teacher.forward = count('teacher', teacher)  # what model.teacher(...) calls
        model.compiled_step.compiled_part = count('student', student)
        monkeypatch.setattr(optimizer, 'step', count('step', step))
        result = real_breakdown(model, optimizer, bench, iters)
        assert all(p.grad is None for p in model.parameters())  # left as a step leaves them
        return result

    monkeypatch.setattr(step_bench, 'breakdown', counting_breakdown)
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

    monkeypatch.setattr(step_bench, 'breakdown', failing_breakdown)
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
    totals = profiling.profile_totals(events, cuda=True)
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


def test_variants_are_timed_next_to_the_step(tool, tmp_path, capsys, monkeypatch):
    """--variant builds each named variant (its config changes and, for masked_every_conv,
    every convolution output masked) and times it alternated with the H-GKD step."""
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    built = []
    real_build = step_bench.build_model
    monkeypatch.setattr(step_bench, 'build_model',
                        lambda cfg, device: built.append(cfg) or real_build(cfg, device))
    result = tool.main([str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '2',
                        '--warmup', '0', '--threads', '1', '--backend', 'packed',
                        '--variant', 'decoder_512', 'masked_every_conv'])
    assert [cfg['neck']['channels'] for cfg in built] == [64, 512, 64]
    assert [cfg['backbone']['backend'] for cfg in built] == ['packed', 'packed', 'masked']
    variants = result['variants']
    assert list(variants) == ['decoder_512', 'masked_every_conv']
    for row in variants.values():
        assert row['iters'] == 2 and row['speed_vs_hgkd'] == pytest.approx(
            result['hgkd']['cpu_ms_median'] / row['cpu_ms_median'])
    out = capsys.readouterr().out
    assert 'decoder_512' in out and 'speed vs H-GKD' in out


def test_mask_every_conv_masks_the_outputs_the_norm_would():
    """The variant's student: same features (the masked norm masks anyway), one more
    multiply per convolution."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(tiny_hgkd_cfg())
    inputs, mask = torch.randn(2, 3, 64, 64), torch.rand(2, 2, 2) > 0.5
    mask[:, 0, 0] = True
    reference = model.backbone(inputs, mask)
    seen = []
    sparse_conv = model.backbone.sparse_conv
    model.backbone.sparse_conv = lambda *args, **kwargs: seen.append(kwargs) or sparse_conv(
        *args, **kwargs)
    step_bench.mask_every_conv(model)
    for out, expected in zip(model.backbone(inputs, mask), reference):
        assert torch.allclose(out, expected, atol=1e-6)
    assert seen and all(kwargs == {} for kwargs in seen)  # masked_norm_next left False
