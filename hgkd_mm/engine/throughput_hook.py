"""Training throughput and the share of time spent waiting for data, in the log."""
from __future__ import annotations

from collections import deque
from typing import Optional

from mmengine.hooks import Hook, IterTimerHook
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS


def batch_images(data_batch) -> int:
    """Images in a collated batch: ``inputs`` stacked (B, C, H, W) or a list of B."""
    inputs = data_batch['inputs'] if isinstance(data_batch, dict) else data_batch
    return len(inputs)


@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class ThroughputHook(Hook):
    """Log ``img_per_s`` and ``data_wait`` with every training log line.

    Built on mmengine's ``IterTimerHook``, which records for each iteration ``time`` (from
    the end of the previous iteration's timer to the end of this step: waiting for the
    batch, the step, and the hooks that ran in between) and ``data_time`` (the wait for
    the batch). Over the last ``window_size`` iterations:

    - ``img_per_s``: images this process trained per second of ``time`` (per GPU; the
      total of a distributed run is ``world_size`` times as many);
    - ``data_wait``: the share of ``time`` spent waiting for data, in [0, 1]. Near 0 the
      loader keeps up with the step; the step then runs at its benchmarked speed.

    Args:
        window_size (int, optional): iterations averaged; default the log processor's
            ``window_size`` (the window of the logged ``time``), else 10.
    """

    priority = 'NORMAL'  # after IterTimerHook (default hooks come first), before LoggerHook

    def __init__(self, window_size: Optional[int] = None):
        if window_size is not None and (not isinstance(window_size, int) or window_size < 1):
            raise ValueError(f'ThroughputHook: window_size must be a positive int, got '
                             f'{window_size!r}')
        self.window_size = window_size

    def before_train(self, runner) -> None:
        if not any(isinstance(hook, IterTimerHook) for hook in runner.hooks):
            raise ValueError('ThroughputHook reads the timings of IterTimerHook, which this '
                             "run does not have: keep default_hooks.timer = "
                             "dict(type='IterTimerHook')")
        window = self.window_size or getattr(runner.log_processor, 'window_size', None)
        window = window if isinstance(window, int) else 10  # 'epoch' / 'global': fixed
        self._images: deque = deque(maxlen=window)
        self._seconds: deque = deque(maxlen=window)
        self._data_seconds: deque = deque(maxlen=window)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hub = runner.message_hub
        self._images.append(batch_images(data_batch))
        self._seconds.append(hub.get_scalar('train/time').current())
        self._data_seconds.append(hub.get_scalar('train/data_time').current())
        seconds = sum(self._seconds)
        if seconds > 0:
            hub.update_scalar('train/img_per_s', sum(self._images) / seconds)
            hub.update_scalar('train/data_wait', sum(self._data_seconds) / seconds)
