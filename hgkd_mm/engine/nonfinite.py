"""Stop (or skip a bounded number of) training steps whose loss or gradient is NaN or Inf."""
from __future__ import annotations

import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

SKIPPED_INFO = 'nonfinite_skipped_steps'  # message hub key: saved with every checkpoint


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradient norm is NaN or Inf; training stopped."""


@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Stop training in the iteration whose loss terms or gradient norm are not finite.

    After each iteration (where mmengine's ``RuntimeInfoHook`` has already read the losses
    back to the host: no extra sync), a NaN or Inf loss term or ``grad_norm`` raises
    :class:`NonFiniteLossError` naming the iteration, every loss term, the gradient norm
    and the last checkpoint saved. The hook runs before ``CheckpointHook``, so that step's
    weights are never saved.

    Args:
        max_skipped_steps: with N > 0, the optimizer steps only when every gradient is
            finite (one host sync per step, before the optimizer), so a non-finite step
            (a bf16 spike) leaves weights and optimizer state untouched; each skipped step
            is logged, and the (N+1)-th stops training as above. The count is kept in
            the message hub, so it carries over a resume. 0 (default): stop at the first.
    """

    priority = 55  # after DeferredGradNormHook (NORMAL) logs grad_norm, before LoggerHook

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if isinstance(max_skipped_steps, bool) or not isinstance(max_skipped_steps, int) \
                or max_skipped_steps < 0:
            raise ValueError('NonFiniteGuardHook: max_skipped_steps must be an int >= 0, got '
                             f'{max_skipped_steps!r}')
        self.max_skipped_steps = max_skipped_steps
        self._stepped = False  # an optimizer stepped (or was skipped) this iteration
        self._skipped = False

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        for wrapper in wrappers:
            optimizer = wrapper.optimizer
            if not hasattr(optimizer.step, 'nonfinite_guard'):  # once per optimizer
                optimizer.step = self._guard_step(optimizer, optimizer.step)

    def _guard_step(self, optimizer: torch.optim.Optimizer, step):

        def guarded_step(*args, **kwargs):
            self._stepped = True
            if self.max_skipped_steps and not _gradients_finite(optimizer):
                self._skipped = True
                return None
            return step(*args, **kwargs)

        guarded_step.nonfinite_guard = self
        return guarded_step

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._stepped = self._skipped = False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        losses = {name: float(value) for name, value in (outputs or {}).items()}
        # a grad norm is this iteration's only if an optimizer stepped (accumulation)
        norms = {name: buffer.current() for name, buffer in runner.message_hub.log_scalars.items()
                 if name.startswith('train/grad_norm') and self._stepped}
        values = list(losses.values()) + list(norms.values())
        if not self._skipped and all(math.isfinite(value) for value in values):
            return
        terms = ', '.join(f'{name}={value:.6g}' for name, value in {**losses, **norms}.items())
        where = f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'
        skipped = runner.message_hub.get_info(SKIPPED_INFO, 0)
        if self._skipped and skipped < self.max_skipped_steps:
            runner.message_hub.update_info(SKIPPED_INFO, skipped + 1)
            runner.logger.warning(
                f'skipped the optimizer step of {where}: non-finite gradient ({terms}); '
                f'{skipped + 1} of max_skipped_steps={self.max_skipped_steps} used')
            return
        last = runner.message_hub.get_info('last_ckpt')
        limit = (f'; {skipped} non-finite steps skipped already, max_skipped_steps='
                 f'{self.max_skipped_steps}' if self.max_skipped_steps else '')
        raise NonFiniteLossError(
            f'non-finite loss or gradient norm at {where}: {terms}{limit}. Training stopped '
            'before this step was saved; last checkpoint saved: '
            f'{last + f" (resume with --resume {last})" if last else "none"}')


def _gradients_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every gradient of ``optimizer``'s parameters is finite (one host sync)."""
    grads = [param.grad for group in optimizer.param_groups for param in group['params']
             if param.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
