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

from hgkd_mm.benchmark import table


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
    results = []
    for path in json_files(args.paths):
        try:
            result = json.loads(path.read_text())
            table([(path.stem, result)], args.top)  # a malformed file is named here
        except (ValueError, KeyError, TypeError) as error:
            raise SystemExit(f'bench_table: {path} is not a benchmark_pretrain.py result '
                             f'({type(error).__name__}: {error})')
        results.append((path.stem, result))
    text = table(results, args.top)
    print(text)
    return text


if __name__ == '__main__':
    main()
