"""The step-time ratio of two pre-training configs, measured side by side in one process.

Equal-time comparisons convert optimizer steps to time with this ratio: each config's
model and optimizer are built from its file, and their training steps alternate on the
same synthetic uint8 batch (decoding and augmentation excluded, which both share), so a
machine shared with other jobs slows both alike.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, Sequence

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample


def build_step(config: str):
    """``step()`` running one ``train_step`` of ``config``'s model and optimizer."""
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    if 'data_preprocessor' not in cfg.model and cfg.get('data_preprocessor'):
        cfg.model.data_preprocessor = cfg.data_preprocessor  # as mmengine's Runner does
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return model, optim_wrapper, cfg


def time_steps(configs: Dict[str, str], batch_size: int, img_size: int, iters: int = 20,
               warmup: int = 3, seed: int = 0) -> Dict[str, dict]:
    """Median seconds per training step of each config, steps alternating between them.

    Returns ``{name: {'median_s': ..., 'times_s': [...]}}``.
    """
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8)
    # as the configs' default_collate batches them
    data = dict(inputs=images, data_samples=[DataSample() for _ in range(batch_size)])
    steps = {}
    for name, config in configs.items():
        model, optim_wrapper, _ = build_step(config)
        steps[name] = (lambda m=model, o=optim_wrapper: m.train_step(data, o))
    times: Dict[str, list] = {name: [] for name in configs}
    for i in range(warmup + iters):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
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


__all__: Sequence[str] = ('time_steps', 'ratio', 'steps_at_equal_time')
