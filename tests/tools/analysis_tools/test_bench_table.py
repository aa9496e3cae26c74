"""tools/analysis_tools/bench_table.py: the committed H100 and CPU results give the rows
that docs/benchmarks.md shows; bad input names the file."""
import json
import os

import pytest

from hgkd_mm.benchmark import report
from helpers import ROOT, load_tool

H100 = os.path.join(ROOT, 'docs', 'bench', 'h100-2026-11-27')
CPU = os.path.join(ROOT, 'docs', 'bench', 'cpu-2026-11-27', 'hgkd_r50_b8_t1.json')


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis_tools/bench_table.py')


def cells(line):
    return [cell.strip() for cell in line.strip('|').split('|')]


def test_rows_match_the_documented_h100_and_cpu_results(tool, capsys):
    text = tool.main([H100, CPU])
    assert capsys.readouterr().out.strip() == text
    rows = {cells(line)[0]: cells(line) for line in text.splitlines()[2:]}
    assert len(rows) == 8  # 7 H100 runs + the CPU run

    compiled = rows['run2_compiled']
    assert compiled[1] == 'NVIDIA H100 80GB HBM3'
    assert compiled[2] == 'batch 128, bf16, compiled, norm torch, ForeachLamb'
    assert compiled[3:] == ['49.3 / 2,597', '2,934', '214.9 / 596, 9,859', '4.36x', '0.30']
    assert rows['run2_eager'][2:4] == ['batch 128, bf16, eager, norm torch, ForeachLamb',
                                       '140.4 / 912']
    assert 'backend spconv' in rows['run2_spconv_eager'][2]
    assert 'teacher masked' in rows['run1_lamb_teacher_masked'][2]
    assert rows['run2_compiled_adamw'][2].endswith('AdamW (fused)')
    cpu = rows['hgkd_r50_b8_t1']
    assert cpu[3:] == ['9,819.2 / 0.81', '2,360', '15,675.9 / 0.51, n/a',
                       '1.60x (1.60x by CPU time)', 'n/a']

    # the same figures as the tables of docs/benchmarks.md
    with open(os.path.join(ROOT, 'docs', 'benchmarks.md')) as f:
        docs = f.read()
    for name in ('run1_lamb_compiled', 'run2_eager', 'run2_compiled_adamw', 'run1_lamb_eager'):
        speed, peak, composition, ratio = rows[name][3:7]
        assert f'| {speed} | {peak} | {composition} | {ratio} |' in docs, name


def test_settings_of_the_new_options_and_profile(tool, tmp_path):
    with open(os.path.join(H100, 'run2_compiled.json')) as f:
        result = json.load(f)
    result.update(channels_last=True, norm_impl='triton',
                  compile=dict(requested=True, used=True, mode='reduce-overhead',
                               teacher=True, error=None),
                  breakdown=dict(teacher_forward_ms=15.25, student_forward_backward_ms=30.0,
                                 clip_and_optimizer_ms=4.0, sum_ms=49.25, iters=10),
                  profile=dict(total_ms_per_step=48.0, sort_by='self_device_time_total',
                               top=[dict(name='aten::convolution', calls_per_step=53,
                                         ms_per_step=20.5)]))
    path = tmp_path / 'combo.json'
    path.write_text(json.dumps(result))
    text = tool.main([str(path), '--top', '5'])
    assert cells(text.splitlines()[2])[2] == (
        'batch 128, bf16, compiled (reduce-overhead), teacher compiled, norm triton, '
        'channels_last, ForeachLamb')
    assert text.splitlines()[-3:] == [
        'combo: teacher forward 15.2 ms, student forward + backward 30.0 ms, clip + optimizer '
        '4.0 ms, timed alone (sum 49.2; step 49.3)',
        'combo: 48.0 ms per step by self_device_time_total',
        '     20.50 ms      53 calls  aten::convolution']
    # a CUDA profile also has the launches and CPU time: busy GPU time against the step
    result['profile'].update(kernel_launches_per_step=1234.0, cpu_ms_per_step=35.25)
    path.write_text(json.dumps(result))
    assert tool.main([str(path), '--top', '1']).splitlines()[-2] == (
        'combo: GPU busy 48.0 ms of a 49.3 ms step, 1234 kernel launches, 35.2 ms of CPU '
        'time in ops, per step (profiled)')

    result['compile'] = dict(requested=True, used=False, error='RuntimeError: boom')
    del result['composition'], result['ratio_img_per_s'], result['memory_ratio']
    path.write_text(json.dumps(result))
    line = cells(tool.main([str(path)]).splitlines()[2])
    assert 'eager (compile failed: RuntimeError: boom)' in line[2]
    assert line[5:] == ['not run', 'n/a', 'n/a']


def test_negative_top_is_refused(tool, capsys):
    with pytest.raises(SystemExit):
        tool.main([H100, '--top', '-1'])
    assert '--top must be 0 or more, got -1' in capsys.readouterr().err


def test_bad_input_names_the_file(tool, tmp_path):
    with pytest.raises(SystemExit, match='no such file or folder: .*missing.json'):
        tool.main([str(tmp_path / 'missing.json')])
    with pytest.raises(SystemExit, match='no JSON files'):
        tool.main([str(tmp_path)])
    bad = tmp_path / 'bad.json'
    bad.write_text('{"hgkd": {}}')
    with pytest.raises(SystemExit, match=r'bad.json is not a benchmark_pretrain.py result'):
        tool.main([str(bad)])
    bad.write_text('not json')
    with pytest.raises(SystemExit, match=r'bad.json is not a benchmark_pretrain.py result'):
        tool.main([str(bad)])


def test_h100_packed_rows_match_the_documented_results(tool):
    folder = os.path.join(ROOT, 'docs', 'bench', 'h100-2026-11-27-728aaed')
    rows = {cells(line)[0]: cells(line) for line in tool.main([folder]).splitlines()[2:]
            if line.startswith('|')}  # then the breakdown lines
    assert set(rows) == {'compiled', 'eager', 'masked_compiled', 'masked_eager',
                         'compiled_cudagraphs', 'eager_channels_last'}
    assert rows['compiled_cudagraphs'][2:] == [
        'batch 128, bf16, compiled (reduce-overhead), norm torch, backend packed, ForeachLamb',
        '46.9 / 2,731', '1,253', '220.8 / 580, 9,857', '4.71x', '0.13']
    with open(os.path.join(ROOT, 'docs', 'benchmarks.md')) as f:
        docs = f.read()
    for name in ('compiled', 'eager_channels_last', 'masked_compiled', 'masked_eager'):
        speed, peak, composition, ratio, memory_ratio = rows[name][3:8]
        assert f'| {speed} | {peak} | {composition} | {ratio} | {memory_ratio} |' in docs, name


def test_reserved_ratio_joins_the_memory_cell(tool):
    with open(os.path.join(H100, 'run2_compiled.json')) as f:
        result = json.load(f)
    result['reserved_ratio'] = 0.804
    assert cells(report.row('graphs', result))[-1] == '0.30 (reserved 0.80)'


def test_h100_default_step_rows_match_the_documented_results(tool):
    """The goal rows of docs/benchmarks.md are the tool's reading of the stored JSON."""
    folder = os.path.join(ROOT, 'docs', 'bench', 'h100-2026-11-27-1a79273')
    rows = {cells(line)[0]: cells(line) for line in tool.main([folder]).splitlines()[2:]
            if line.startswith('|')}
    assert set(rows) == {'compiled', 'compiled_combo'}
    assert rows['compiled_combo'][2:] == [
        'batch 128, bf16, compiled (reduce-overhead), teacher compiled, norm torch, '
        'channels_last, backend packed, ForeachLamb',
        '40.3 / 3,174', '965', '221.7 / 577, 9,857', '5.50x', '0.10 (reserved 0.40)']
    with open(os.path.join(ROOT, 'docs', 'benchmarks.md')) as f:
        docs = f.read()
    for name in ('compiled', 'compiled_combo'):
        speed, peak, composition, ratio, memory_ratio = rows[name][3:8]
        for cell in (speed, peak, composition, ratio, memory_ratio):
            assert cell in docs, (name, cell)
