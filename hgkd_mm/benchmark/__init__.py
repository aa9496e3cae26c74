"""Training-step benchmarks of H-GKD against mmpretrain's SparK + teacher (step_bench),
profiles and op counts (profiling) and their reports (report). The command lines are
tools/analysis_tools/benchmark_pretrain.py, count_step_ops.py and bench_table.py."""
from .profiling import CountOps, count_ops, profile_steps, profile_totals
from .report import print_table, table
from .step_bench import (VARIANTS, Bench, Step, build_model, crop_size, hgkd_config,
                         hgkd_model_cfg, run, total_loss)

__all__ = [
    'Bench', 'CountOps', 'Step', 'VARIANTS', 'build_model', 'count_ops', 'crop_size',
    'hgkd_config', 'hgkd_model_cfg', 'print_table', 'profile_steps', 'profile_totals', 'run',
    'table', 'total_loss'
]
