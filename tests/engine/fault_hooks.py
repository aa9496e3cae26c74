"""Hooks that inject faults into a real training run (imported by the fault-test configs
through ``custom_imports=['fault_hooks']``, this folder on their PYTHONPATH)."""
import math
import os
import signal
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class InjectNaNHook(Hook):
    """Multiply the backbone's output by NaN in the given (1-based) iterations: that
    iteration's loss and gradients are NaN, as after a bf16 overflow."""

    priority = 'HIGHEST'

    def __init__(self, iterations=()) -> None:
        self.iterations = set(iterations)
        self._active = False

    def before_train(self, runner) -> None:
        model = getattr(runner.model, 'module', runner.model)
        model.backbone.register_forward_hook(self._poison)

    def _poison(self, module, inputs, outputs):
        if self._active:
            return tuple(output * math.nan for output in outputs)
        return None

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._active = runner.iter + 1 in self.iterations


@HOOKS.register_module()
class RankFaultHook(Hook):
    """On ``rank`` at (1-based) ``iteration``: ``fault='raise'`` raises
    ``RuntimeError('injected failure on rank R')``; ``'kill'`` sends this process SIGKILL
    (a node lost mid-training), printing ``KILLING rank R at <time>`` first."""

    def __init__(self, rank: int, iteration: int, fault: str) -> None:
        self.rank, self.iteration, self.fault = rank, iteration, fault

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if get_rank() != self.rank or runner.iter + 1 != self.iteration:
            return
        if self.fault == 'raise':
            raise RuntimeError(f'injected failure on rank {self.rank}')
        print(f'KILLING rank {self.rank} at {time.time():.3f}', flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
