"""The benchmark's result dict as text: a summary for the terminal and the Markdown rows of
docs/benchmarks.md."""
from __future__ import annotations

from typing import List, Tuple


def print_table(result: dict) -> None:
    """A short human-readable summary of ``result``."""
    compile_info = result['compile']
    compile_state = 'off'
    if compile_info['used']:
        compile_state = ('on' + (f" ({compile_info['mode']})" if compile_info['mode'] else '')
                         + (' + teacher' if compile_info['teacher'] else ''))
    print(f"{result['device_name']} | torch {result['torch']} | mmpretrain "
          f"{result['mmpretrain']} | threads {result['threads']}")
    print(f"batch {result['batch_size']} | {result['img_size']} px | {result['amp']} | compile "
          f"{compile_state} | backend {result['backend']} ({result['norm_impl']} norms) | teacher "
          f"{result['teacher_input_mode']} | channels_last {result['channels_last']} | "
          f"{result['optimizer']}")
    on_cuda = result['device'] == 'cuda'
    memory_label = 'peak MiB' if on_cuda else 'peak RSS MiB'
    print(f"{'step':16s} {'ms (median)':>12s} {'img/s':>8s} {'CPU ms':>10s} {memory_label:>13s}")
    for name, key in (('H-GKD', 'hgkd'), ('SparK + teacher', 'composition')):
        if key not in result:
            continue
        row = result[key]
        memory = row.get('peak_memory_mib' if on_cuda else 'peak_rss_mib',
                         row.get('process_peak_rss_mib'))
        cpu_ms = row.get('cpu_ms_median')
        print(f"{name:16s} {row['ms_median']:12.1f} {row['img_per_s']:8.2f} "
              f"{'-' if cpu_ms is None else format(cpu_ms, '.1f'):>10s} "
              f"{'-' if memory is None else format(memory, '.0f'):>13s}")
    for name, row in result.get('variants', {}).items():
        print(f"{name:16s} {row['ms_median']:12.1f} {row['img_per_s']:8.2f} "
              f"{format(row['cpu_ms_median'], '.1f') if 'cpu_ms_median' in row else '-':>10s} "
              f"{'-':>13s}  speed vs H-GKD {row['speed_vs_hgkd']:.2f}x")
    if 'breakdown' in result:
        parts = result['breakdown']
        print(f"H-GKD parts alone (ms): teacher forward {parts['teacher_forward_ms']:.1f}, "
              f"{parts.get('student_part', 'student')} forward + backward "
              f"{parts['student_forward_backward_ms']:.1f}, "
              f"clip + optimizer {parts['clip_and_optimizer_ms']:.1f} "
              f"(sum {parts['sum_ms']:.1f})")
    if 'ratio_img_per_s' in result:
        ratios = [f"{result['ratio_img_per_s']:.2f}x img/s"]
        if result.get('ratio_cpu_time'):
            ratios.append(f"{result['ratio_cpu_time']:.2f}x by CPU time")
        if result['memory_ratio']:
            ratios.append(f"{result['memory_ratio']:.2f}x memory")
        print('H-GKD vs SparK + teacher: ' + ', '.join(ratios))


# ------------------------------------------------------------ docs/benchmarks.md rows
HEADER = ('| run | device | settings | H-GKD ms / img/s | H-GKD peak MiB | '
          'SparK + teacher ms / img/s, MiB | ratio img/s | memory ratio |\n'
          '| --- | --- | --- | --- | --- | --- | --- | --- |')


def settings(result: dict) -> str:
    """The options that tell the runs of one machine apart."""
    comp = result.get('compile') or {}
    parts = [f"batch {result['batch_size']}", result['amp']]
    if comp.get('used'):
        parts.append('compiled' + (f" ({comp['mode']})" if comp.get('mode') else ''))
        if comp.get('teacher'):
            parts.append('teacher compiled')
    else:
        parts.append('eager' if not comp.get('requested') else
                     f"eager (compile failed: {comp.get('error')})")
    parts.append(f"norm {result.get('norm_impl', 'torch')}")
    if result['channels_last']:
        parts.append('channels_last')
    if result['backend'] != 'masked':
        parts.append(f"backend {result['backend']}")
    if result['teacher_input_mode'] != 'full':
        parts.append(f"teacher {result['teacher_input_mode']}")
    parts.append(result['optimizer'] + (' (fused)' if result.get('optimizer_fused') else ''))
    return ', '.join(parts)


def memory(part: dict) -> str:
    value = part.get('peak_memory_mib', part.get('peak_rss_mib'))
    return 'n/a' if value is None else f'{value:,.0f}'


def speed(part: dict) -> str:
    img_per_s = part['img_per_s']
    return f"{part['ms_median']:,.1f} / " + (f'{img_per_s:,.0f}' if img_per_s >= 100 else
                                             f'{img_per_s:.2f}')


def row(name: str, result: dict) -> str:
    hgkd = result['hgkd']
    cells = [name, result['device_name'], settings(result), speed(hgkd), memory(hgkd)]
    comp = result.get('composition')
    if comp is None:  # run without --compare-spark
        cells += ['not run', 'n/a', 'n/a']
    else:
        ratio_memory = result.get('memory_ratio')
        ratio = f"{result['ratio_img_per_s']:.2f}x"
        if 'ratio_cpu_time' in result:
            ratio += f" ({result['ratio_cpu_time']:.2f}x by CPU time)"
        memory_cell = 'n/a' if ratio_memory is None else f'{ratio_memory:.2f}'
        if 'reserved_ratio' in result:  # the footprints with CUDA-graph pools
            memory_cell += f" (reserved {result['reserved_ratio']:.2f})"
        cells += [f'{speed(comp)}, {memory(comp)}', ratio, memory_cell]
    return '| ' + ' | '.join(cells) + ' |'


def breakdown_lines(name: str, result: dict) -> List[str]:
    """The ``--breakdown`` line of a run, if it has one."""
    times = result.get('breakdown')
    if not times:
        return []
    return [f"{name}: teacher forward {times['teacher_forward_ms']:.1f} ms, "
            f"{times.get('student_part', 'student')} forward + backward "
            f"{times['student_forward_backward_ms']:.1f} ms, clip + optimizer "
            f"{times['clip_and_optimizer_ms']:.1f} ms, timed alone (sum {times['sum_ms']:.1f}; "
            f"step {result['hgkd']['ms_median']:.1f})"]


def top_ops(name: str, result: dict, top: int) -> List[str]:
    profile = result.get('profile')
    if not profile:
        return []
    if 'kernel_launches_per_step' in profile:  # CUDA: busy GPU time against the step
        head = (f"{name}: GPU busy {profile['total_ms_per_step']:.1f} ms of a "
                f"{result['hgkd']['ms_median']:.1f} ms step, "
                f"{profile['kernel_launches_per_step']:.0f} kernel launches, "
                f"{profile['cpu_ms_per_step']:.1f} ms of CPU time in ops, per step (profiled)")
    else:
        head = f"{name}: {profile['total_ms_per_step']:.1f} ms per step by {profile['sort_by']}"
    lines = [head]
    lines += [f"  {op['ms_per_step']:8.2f} ms  {op['calls_per_step']:6.0f} calls  {op['name']}"
              for op in profile['top'][:top]]
    return lines


def table(results: List[Tuple[str, dict]], top: int = 0) -> str:
    """The Markdown table of ``(name, result)`` runs, then their breakdown lines and, with
    ``top``, the ``top`` most expensive ops of profiled runs."""
    lines, notes = [HEADER], []
    for name, result in results:
        lines.append(row(name, result))
        notes += breakdown_lines(name, result)
        notes += top_ops(name, result, top) if top else []
    return '\n'.join(lines + ([''] + notes if notes else []))
