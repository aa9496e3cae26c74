"""Markdown rows for docs/benchmarks.md from benchmark_pretrain.py's JSON files.

    python tools/analysis_tools/bench_table.py work_dirs/bench/*.json
    python tools/analysis_tools/bench_table.py work_dirs/bench        # every *.json in it

One row per run: its settings, the H-GKD step and the composition measured in the same
run, and their ratios. With ``--top N``, the N ops with the most device (CPU) time of the
runs that were profiled follow; runs with ``--breakdown`` get a line with their parts.
"""
import argparse
import json
from pathlib import Path
from typing import List

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


def json_files(paths: List[str]) -> List[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(path.glob('*.json'))
        elif path.is_file():
            files.append(path)
        else:
            raise SystemExit(f'bench_table: no such file or folder: {path}')
    if not files:
        raise SystemExit(f"bench_table: no JSON files in {' '.join(paths)}")
    return files


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('paths', nargs='+', help='JSON files or folders of them')
    parser.add_argument('--top', type=int, default=0, metavar='N',
                        help='also list the N most expensive ops of profiled runs')
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.error(f'--top must be 0 or more, got {args.top}')
    lines, notes = [HEADER], []
    for path in json_files(args.paths):
        try:
            result = json.loads(path.read_text())
            lines.append(row(path.stem, result))
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(f'bench_table: {path} is not a benchmark_pretrain.py result '
                             f'({type(error).__name__}: {error})')
        notes += breakdown_lines(path.stem, result)
        notes += top_ops(path.stem, result, args.top) if args.top else []
    text = '\n'.join(lines + ([''] + notes if notes else []))
    print(text)
    return text


if __name__ == '__main__':
    main()
