"""Distillation head: project to the teacher width, normalise targets, feature loss."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmpretrain.registry import MODELS

TARGET_NORMS = ('layernorm', 'none', 'batchnorm')
LOSSES = ('mse', 'smooth_l1', 'cosine')
LOSS_ON = ('masked', 'visible', 'all', 'weighted')
SIM_DEFAULTS = dict(queue_size=4096, temperature=0.07, weight=1.0)  # head.sim's keys


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` ``(B, K)`` -> ``(B,)``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@MODELS.register_module()
class HGKDDistillHead(BaseModule):
    """Predict the teacher's tokens from the decoded student features.

    Args:
        in_channels (int): decoder width.
        target_dims (int): teacher width ``D``.
        target_norm (str): ``'layernorm'`` (per token, no affine), ``'none'`` or
            ``'batchnorm'`` (per channel over batch and positions, no affine).
        loss (str): ``'mse'``, ``'smooth_l1'`` or ``'cosine'``.
        loss_on (str): ``'masked'`` positions, ``'visible'`` positions, ``'all'``
            positions, or ``'weighted'``: masked positions plus visible ones at
            ``visible_weight``.
        visible_weight (float): weight of visible positions for ``'weighted'``.
        sim (dict, optional): the ``L_sim`` relation term, off when None:
            ``dict(queue_size=4096, temperature=0.07, weight=1.0)``. Pearson
            correlation between the student's and teacher's similarity
            distributions of pooled features against a FIFO queue of teacher
            embeddings (local to each process).
    """

    def __init__(self,
                 in_channels: int,
                 target_dims: int,
                 target_norm: str = 'layernorm',
                 loss: str = 'mse',
                 loss_on: str = 'masked',
                 visible_weight: float = 0.1,
                 sim: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        for name, value, allowed in (('target_norm', target_norm, TARGET_NORMS),
                                     ('loss', loss, LOSSES), ('loss_on', loss_on, LOSS_ON)):
            if value not in allowed:
                raise ValueError(f'head.{name} must be one of {allowed}, got {value!r}')
        if not visible_weight >= 0:
            raise ValueError(f'head.visible_weight must be >= 0, got {visible_weight!r}')
        self.target_dims = target_dims
        self.target_norm = target_norm
        self.loss_type = loss
        self.loss_on = loss_on
        self.visible_weight = visible_weight
        self.proj = nn.Conv2d(in_channels, target_dims, kernel_size=1)
        self.sim = None
        if sim is not None:
            self.sim = dict(SIM_DEFAULTS, **sim)
            unknown = sorted(set(self.sim) - set(SIM_DEFAULTS))
            if unknown:
                raise ValueError(f'head.sim: unknown {unknown} (it takes '
                                 f"{', '.join(SIM_DEFAULTS)})")
            size, temperature, weight = (self.sim[k] for k in SIM_DEFAULTS)
            if not (isinstance(size, int) and size >= 1):
                raise ValueError(f'head.sim.queue_size must be an int >= 1, got {size!r}')
            if not temperature > 0:
                raise ValueError(f'head.sim.temperature must be > 0, got {temperature!r}')
            if not weight >= 0:
                raise ValueError(f'head.sim.weight must be >= 0, got {weight!r}')
            queue = F.normalize(torch.randn(self.sim['queue_size'], target_dims), dim=1)
            self.register_buffer('queue', queue)
            self.register_buffer('queue_ptr', torch.zeros((), dtype=torch.long))

    def normalize_target(self, tokens: Tensor) -> Tensor:
        """``(B, D, Ht, Wt)`` -> normalised, same shape, float32."""
        tokens = tokens.float()
        if self.target_norm == 'layernorm':
            return F.layer_norm(tokens.permute(0, 2, 3, 1), (tokens.shape[1], )).permute(0, 3, 1, 2)
        if self.target_norm == 'batchnorm':
            return F.batch_norm(tokens, None, None, training=True)
        return tokens

    def target(self, teacher_tokens: List[Tensor]) -> Tensor:
        """Mean of the normalised teacher layers: ``(B, D, Ht, Wt)``."""
        return torch.stack([self.normalize_target(t) for t in teacher_tokens]).mean(0)

    def position_weights(self, visible: Tensor) -> Tensor:
        """``visible (B, 1, Ht, Wt)`` -> loss weight per position."""
        if self.loss_on == 'all':
            return torch.ones_like(visible)
        if self.loss_on == 'visible':
            return visible
        masked = 1 - visible
        if self.loss_on == 'weighted':
            return masked + self.visible_weight * visible
        return masked

    def feature_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-position loss ``(B, 1, Ht, Wt)``."""
        if self.loss_type == 'mse':
            return (pred - target).square().mean(1, keepdim=True)
        if self.loss_type == 'smooth_l1':
            return F.smooth_l1_loss(pred, target, reduction='none').mean(1, keepdim=True)
        return 1 - F.cosine_similarity(pred, target, dim=1).unsqueeze(1)

    def sim_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """``L_sim``: 1 - Pearson correlation of the similarity distributions, in float32
        (under bf16 autocast the logits, divided by a small temperature, would be rounded
        to bf16). The queue takes the teacher embeddings in training mode only."""
        with torch.autocast(pred.device.type, enabled=False):
            student = F.normalize(pred.float().mean((2, 3)), dim=1)
            teacher = F.normalize(target.float().mean((2, 3)), dim=1)
            queue = self.queue.float().clone()
            temperature = self.sim['temperature']
            p_student = F.softmax(student @ queue.T / temperature, dim=1)
            p_teacher = F.softmax(teacher @ queue.T / temperature, dim=1)
        if self.training:
            self._enqueue(teacher.detach())
        return (1 - pearson(p_student, p_teacher)).mean() * self.sim['weight']

    @torch.no_grad()
    def _enqueue(self, embeddings: Tensor) -> None:
        size = self.queue.shape[0]
        embeddings = embeddings[-size:]  # a batch larger than the queue: its newest rows
        index = (self.queue_ptr + torch.arange(embeddings.shape[0], device=embeddings.device)) % size
        self.queue[index] = embeddings.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + embeddings.shape[0]) % size)

    def loss(self, decoded: Tensor, teacher_tokens: List[Tensor],
             mask: Tensor) -> Dict[str, Tensor]:
        """Losses from ``decoded (B, C, Ht, Wt)``, teacher grids ``(B, D, Ht, Wt)`` and the
        stride-32 ``mask (B, h, w)`` (True = visible)."""
        pred = self.proj(decoded).float()
        target = self.target(teacher_tokens)
        if pred.shape != target.shape:
            raise ValueError(f'student prediction {tuple(pred.shape)} and teacher tokens '
                             f'{tuple(target.shape)} differ: the teacher grid must equal the '
                             'decoder output grid (neck.out_stride == teacher patch_size) and '
                             'head.target_dims must equal the teacher width')
        visible = F.interpolate(mask[:, None].float(), size=pred.shape[-2:], mode='nearest')
        weights = self.position_weights(visible)
        per_position = self.feature_loss(pred, target)
        losses = dict(loss_feat=(per_position * weights).sum() / weights.sum().clamp_min(1))
        if self.sim is not None:
            losses['loss_sim'] = self.sim_loss(pred, target)
        return losses
