"""LAMB with multi-tensor (``torch._foreach_*``) ops.

mmpretrain's ``Lamb`` (timm's) loops over the parameters in Python: about 15 small
kernels per parameter, some 3,000 launches per ResNet-50 step, which on a GPU costs more
than the arithmetic. ``ForeachLamb`` computes the same update over whole parameter lists
at once; its arguments, state and checkpoints are ``Lamb``'s, so either resumes the other.
"""
import math
from typing import List

import torch
from mmpretrain.engine.optimizers import Lamb
from mmpretrain.registry import OPTIMIZERS
from torch import Tensor


def _trust_ratio(params: List[Tensor], updates: List[Tensor], clip: bool) -> List[Tensor]:
    """Per tensor ``|w| / |update|``, 1 where either norm is 0 (as ``Lamb``)."""
    w_norm = torch.stack(torch._foreach_norm(params))
    u_norm = torch.stack(torch._foreach_norm(updates))
    one = torch.ones_like(w_norm)
    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, one)
    if clip:  # LAMBC: upper bound 1
        ratio = torch.minimum(ratio, one)
    return list(ratio.unbind())


# the group settings the update depends on: groups that agree are updated together
_SETTINGS = ('lr', 'betas', 'eps', 'weight_decay', 'bias_correction', 'grad_averaging',
             'trust_clip', 'always_adapt', 'step')


@OPTIMIZERS.register_module()
class ForeachLamb(Lamb):
    """mmpretrain's ``Lamb`` (same arguments and results), computed with foreach ops.

    mmengine's optimizer constructor makes one group per parameter when a config has a
    ``paramwise_cfg``: groups with equal settings are updated as one list.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buckets = {}
        for group in self.param_groups:
            group['step'] = group.get('step', 0) + 1  # every group, as Lamb
            params = [p for p in group['params'] if p.grad is not None]
            if params:
                # betas may be given as a list (torch's optimizers accept one)
                key = tuple(tuple(v) if isinstance(v, list) else v
                            for v in (group[name] for name in _SETTINGS))
                buckets.setdefault(key, (group, []))[1].extend(params)
        grads = [p.grad for _, params in buckets.values() for p in params]
        if not grads:
            return loss
        if any(grad.is_sparse for grad in grads):
            raise RuntimeError('ForeachLamb does not support sparse gradients')
        # the global gradient norm, clipped to max_grad_norm as Lamb does
        global_norm = torch.linalg.vector_norm(
            torch.stack([n.float() for n in torch._foreach_norm(grads)]))
        max_norm = self.defaults['max_grad_norm']
        clip = torch.where(global_norm > max_norm, global_norm / max_norm,
                           torch.ones_like(global_norm))
        for group, params in buckets.values():
            self._update(group, params, clip)
        return loss

    def _update(self, group: dict, params: List[Tensor], clip: Tensor) -> None:
        """Lamb's update of ``params`` with ``group``'s settings."""
        beta1, beta2 = group['betas']
        beta3 = 1 - beta1 if group['grad_averaging'] else 1.0
        if group['bias_correction']:
            correction1 = 1 - beta1**group['step']
            correction2 = 1 - beta2**group['step']
        else:
            correction1 = correction2 = 1.0
        for p in params:
            if not self.state[p]:
                self.state[p]['exp_avg'] = torch.zeros_like(p)
                self.state[p]['exp_avg_sq'] = torch.zeros_like(p)
        exp_avgs = [self.state[p]['exp_avg'] for p in params]
        exp_avg_sqs = [self.state[p]['exp_avg_sq'] for p in params]
        grads = [p.grad for p in params]

        torch._foreach_div_(grads, clip)  # in place, as Lamb
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=beta3)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, math.sqrt(correction2))
        torch._foreach_add_(denom, group['eps'])
        updates = torch._foreach_div(exp_avgs, correction1)
        torch._foreach_div_(updates, denom)

        weight_decay = group['weight_decay']
        if weight_decay != 0:
            torch._foreach_add_(updates, params, alpha=weight_decay)
        if weight_decay != 0 or group['always_adapt']:
            torch._foreach_mul_(updates, _trust_ratio(params, updates, group['trust_clip']))
        torch._foreach_add_(params, updates, alpha=-group['lr'])
