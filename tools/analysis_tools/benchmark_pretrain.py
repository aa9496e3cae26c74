"""Time full H-GKD training steps (forward ``model.loss``, backward, optimizer step) on
synthetic images, optionally next to the naive composition "mmpretrain SparK step +
teacher forward" and to variants of the model in the same process.

    python tools/analysis_tools/benchmark_pretrain.py CONFIG [--compare-spark] \
        [--batch-size 8] [--iters 5] [--backend masked|packed|spconv] \
        [--variant masked channels_last ...] [--out result.json] [--data DIR]

The teacher checkpoint is never loaded (random teacher: same cost). Defaults follow the
device: on CUDA bf16 autocast and ``torch.compile`` of the student are on, on the CPU
both are off (``--amp`` / ``--compile`` switch them on, ``--no-amp`` / ``--no-compile``
off). The composition always runs eager with the teacher reading the full image, so it
is the same reference for every variant (docs/benchmarks.md). The measuring code is
:mod:`hgkd_mm.benchmark`.
"""
import argparse
import os
from typing import List, Optional

import torch
from mmengine.config import DictAction

from hgkd_mm.benchmark import VARIANTS, run
from hgkd_mm.benchmark.step_bench import COMPILE_MODES, SPARK_DEPTHS
from hgkd_mm.models.backbones.sparse_resnet import BACKENDS
from hgkd_mm.utils.cli import dump_json, image_size, json_path, non_negative_int, positive_int


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='H-GKD pretraining config')
    parser.add_argument('--batch-size', type=positive_int, default=8)
    parser.add_argument('--img-size', type=image_size,
                        help="default: the config's crop size; a multiple of 32")
    parser.add_argument('--iters', type=positive_int, default=10, help='timed steps (median)')
    parser.add_argument('--warmup', type=non_negative_int, default=3,
                        help='untimed steps first')
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=None,
                        help='bf16 autocast (default: on for CUDA, off for CPU)')
    parser.add_argument('--compile', action=argparse.BooleanOptionalAction, default=None,
                        help='torch.compile the student (default: on for CUDA, off for CPU)')
    parser.add_argument('--compile-mode', choices=COMPILE_MODES,
                        help="torch.compile mode for the compiled step; it replaces the "
                        "config's model.cuda_graphs ('default': no CUDA graphs)")
    parser.add_argument('--compile-teacher', action=argparse.BooleanOptionalAction, default=None,
                        help="also compile the teacher forward, in the student's compiled "
                        'function (model.compile_teacher)')
    parser.add_argument('--norm-impl', choices=['torch', 'triton'],
                        help="the student's masked norms: torch ops or Triton kernels")
    parser.add_argument('--profile', metavar='FILE',
                        help='after timing, profile 3 H-GKD steps with torch.profiler and '
                        'write the op table here (the top ops also go into the JSON)')
    parser.add_argument('--breakdown', action='store_true',
                        help="after timing, also time the H-GKD step's parts alone: teacher "
                        'forward, student forward + backward, clip + optimizer step')
    parser.add_argument('--compare-spark', action='store_true',
                        help='also time mmpretrain SparK step + teacher forward')
    parser.add_argument('--spark-depth', type=int, choices=SPARK_DEPTHS,
                        help="SparK ResNet depth (default: the student's depth)")
    parser.add_argument('--backend', choices=BACKENDS, help='student backend')
    parser.add_argument('--variant', nargs='+', choices=list(VARIANTS), metavar='NAME',
                        help='also time these variants of the H-GKD model, alternated with '
                        f"it: {', '.join(VARIANTS)} (masked_every_conv: backend masked with "
                        'every convolution output masked, its earlier behaviour)')
    parser.add_argument('--teacher-input-mode', choices=['full', 'masked'])
    parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                        help='student in channels-last memory format')
    parser.add_argument('--threads', type=positive_int, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--out', type=json_path, help='write the result as JSON here')
    parser.add_argument('--data', metavar='DIR',
                        help="also time on the JPEGs under DIR: the config's pipeline per "
                        "dataloader worker (and mmpretrain's), and mmengine's Runner loop "
                        '(loading, hooks, logging, step) at --batch-size for --iters steps')
    parser.add_argument('--workers', type=non_negative_int,
                        help="--data: the Runner's dataloader workers (default: the config's)")
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: this torch sees no CUDA device')
    if args.data and not os.path.isdir(args.data):
        parser.error(f'--data {args.data}: not a folder')
    if args.compile is None:  # the default: compiled on CUDA only
        args.compile = args.device == 'cuda'
    for option, value in (('--compile-mode', args.compile_mode),
                          ('--compile-teacher', args.compile_teacher)):
        if value and not args.compile:
            parser.error(f'{option} needs the compiled step: add --compile (the default on '
                         'CUDA only)')
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the benchmark; returns (and with ``--out`` writes) the result dict."""
    args = parse_args(argv)
    result = run(args)
    if args.data:
        from hgkd_mm.benchmark.runner_loop import data_timings
        # on the CPU, whose speed drifts on a shared machine, the bare step is timed again
        # after the Runner loop and the two bracket it (on a GPU that would compile it again)
        again = argparse.Namespace(**dict(vars(args), compare_spark=False, variant=None,
                                          breakdown=False, profile=None, out=None))
        data_timings(args, result, retime=(lambda: run(again)['hgkd'])
                     if args.device == 'cpu' else None)
        if args.out:
            dump_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
