"""The step-time ratio of two pre-training configs, measured side by side in one process.

Equal-time comparisons convert optimizer steps to time with this ratio: each config's
model and optimizer are built from its file, and their training steps alternate on the
same synthetic uint8 batch (decoding and augmentation excluded, which both share), so a
machine shared with other jobs slows both alike.
"""
from __future__ import annotations

import functools
import statistics
import time
from typing import Callable, Dict, Sequence

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

from hgkd_mm.benchmark.step_bench import build_model


def build_step(config: str) -> Callable[[dict], dict]:
    """``step(data)``: one ``train_step`` of ``config``'s model and optim wrapper, built
    as mmengine's Runner builds them in one process (SyncBN as BN); returns the log vars."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if 'data_preprocessor' not in cfg.model and cfg.get('data_preprocessor'):
        cfg.model.data_preprocessor = cfg.data_preprocessor  # as mmengine's Runner does
    model = build_model(cfg.model, torch.device('cpu'))
    return functools.partial(model.train_step, optim_wrapper=build_optim_wrapper(
        model, cfg.optim_wrapper))


def time_steps(configs: Dict[str, str], batch_size: int, img_size: int, iters: int = 20,
               warmup: int = 3, seed: int = 0) -> Dict[str, dict]:
    """Median seconds per training step of each config, steps alternating between them.

    Returns ``{name: {'median_s': ..., 'times_s': [...]}}``.
    """
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8)
    # as the configs' default_collate batches them
    data = dict(inputs=images, data_samples=[DataSample() for _ in range(batch_size)])
    steps = {name: build_step(config) for name, config in configs.items()}
    times: Dict[str, list] = {name: [] for name in configs}
    for i in range(warmup + iters):
        for name, step in steps.items():
            start = time.perf_counter()
            step(data)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: dict(median_s=statistics.median(t), times_s=t) for name, t in times.items()}


def ratio(result: Dict[str, dict], numerator: str, denominator: str) -> float:
    """``median(numerator) / median(denominator)``."""
    return result[numerator]['median_s'] / result[denominator]['median_s']


def steps_at_equal_time(steps: int, result: Dict[str, dict], reference: str,
                        other: str) -> int:
    """Steps ``other`` runs in the time ``reference`` takes for ``steps`` steps."""
    return max(1, round(steps * ratio(result, reference, other)))


__all__: Sequence[str] = ('build_step', 'time_steps', 'ratio', 'steps_at_equal_time')
