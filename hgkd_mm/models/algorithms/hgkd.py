"""H-GKD: a frozen MIM ViT teacher distilled into a sparse CNN student."""
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmengine.dist import get_world_size
from torch import Tensor

from mmpretrain.models.backbones.resnet import get_expansion
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ...engine.compiled_step import CompiledStep
from ..backbones import HGKDSparseResNet, student_stages


@MODELS.register_module()
class HGKD(BaseSelfSupervisor):
    """Heterogeneous Generative Knowledge Distillation (arXiv 2309.09571).

    One step: mask, teacher, student encoder, densify + decode, loss.

    Args:
        backbone (dict): the sparse student, e.g. ``HGKDSparseResNet``.
        neck (dict): ``HGKDUNetDecoder``; ``out_stride`` defaults to the teacher's
            patch size, ``in_channels`` and ``in_strides`` to the student's stages.
        head (dict): ``HGKDDistillHead``; ``target_dims`` defaults to the teacher width.
        teacher (dict): ``FrozenViTTeacher``; kept as ``self.target_generator``
            (mmpretrain's name for it) and left out of saved checkpoints: its
            weights come from ``teacher.checkpoint``.
        mask_ratio (float): fraction of stride-32 cells masked, in (0, 1).
        channels_last (bool): run the student in channels-last memory format (its inputs
            and its convolution weights).
        compile (bool | str | dict): ``torch.compile`` the student's part of the step
            (encoder, decoder, head, loss): ``'auto'`` (default) on CUDA inputs,
            ``True`` / ``False`` always / never, a dict: ``torch.compile``'s arguments.
        compile_teacher (bool): compile the teacher in the same function. Default False.
        cuda_graphs (bool | str): replay the compiled step from CUDA graphs
            (``mode='reduce-overhead'``); ``'auto'``: in one process only. Gradient
            accumulation is then refused. Default False.
            These three are :class:`~hgkd_mm.engine.compiled_step.CompiledStep`'s, which
            falls back to eager with a warning if compiling fails in the first step.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 teacher: dict,
                 mask_ratio: float = 0.6,
                 channels_last: bool = False,
                 compile: Union[bool, str, dict] = 'auto',
                 compile_teacher: bool = False,
                 cuda_graphs: Union[bool, str] = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        if not 0 < mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in (0, 1), got {mask_ratio}')
        teacher = MODELS.build(teacher)
        if teacher.input_mode == 'masked' and teacher.decoder is None and teacher.checkpoint:
            raise ValueError(
                f"teacher.input_mode='masked' needs the MAE decoder in teacher.checkpoint "
                f'({teacher.checkpoint}) to give targets at the masked positions, where the '
                "loss is; the file has none: use teacher.input_mode='full'")
        neck = dict(neck)
        neck.setdefault('out_stride', teacher.patch_size)
        if 'in_channels' not in neck and backbone.get('type') in ('HGKDSparseResNet',
                                                                  HGKDSparseResNet):
            neck['in_channels'] = student_widths(backbone)
        elif 'in_channels' not in neck:  # a SparseCNN student: its stage widths and strides
            neck['in_channels'], strides = student_stages(backbone)
            neck.setdefault('in_strides', strides)
        head = dict(head)
        head.setdefault('target_dims', teacher.embed_dims)
        head.setdefault('in_channels', neck.get('channels', 256))
        if head['target_dims'] != teacher.embed_dims:
            raise ValueError(f"head.target_dims={head['target_dims']} must equal the teacher "
                             f'width {teacher.embed_dims}')
        super().__init__(backbone=backbone, neck=neck, head=head, target_generator=teacher,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if self.neck.out_stride != teacher.patch_size:
            raise ValueError(f'neck.out_stride={self.neck.out_stride} must equal the teacher '
                             f'patch_size={teacher.patch_size}: the teacher grid does not align '
                             'with the student strides')
        if not isinstance(channels_last, bool):
            raise ValueError(f'channels_last must be True or False, got {channels_last!r}')
        self.mask_ratio = mask_ratio
        self.channels_last = channels_last
        if channels_last:  # the weights too: else every conv converts its weight per call
            for part in (self.backbone, self.neck, self.head):
                part.to(memory_format=torch.channels_last)
        # how the student's part of the step runs: compiled or eager, chosen in the first
        # step (self.compile is nn.Module.compile())
        self.compiled_step = CompiledStep(compile, compile_teacher, cuda_graphs, module=self)
        # the frozen teacher is not part of the student's checkpoints
        teacher._register_state_dict_hook(_drop_own_keys)
        teacher.register_load_state_dict_pre_hook(_fill_own_keys)

    @property
    def teacher(self):
        return self.target_generator

    @property
    def stride(self) -> int:
        return self.backbone.stride

    def mask(self, inputs: Tensor) -> Tensor:
        """Random per-sample mask on the grid of the student's mask cells
        (``backbone.mask_cell``, 32 px by default), built on the device.

        Returns ``(B, H/cell, W/cell)`` bool, True = visible; every sample keeps
        ``round(h * w * (1 - mask_ratio))`` cells (at least one).
        """
        batch = inputs.shape[0]
        h, w = self.backbone.grid_size(inputs)
        keep = self.num_visible(h, w)
        if self.training and batch * keep < 2 and get_world_size() == 1:
            # at stride 32 each visible cell is one position: torch's BatchNorm refuses a
            # single value per channel, and the masked norms must not normalise it to 0
            raise ValueError(f'batch {batch} with {batch * keep} visible stride-32 cell: '
                             'BatchNorm needs more than one visible value per channel; use '
                             'a larger batch or a lower mask_ratio')
        noise = torch.rand(batch, h * w, device=inputs.device)
        visible_ids = noise.argsort(dim=1)[:, :keep]
        mask = torch.zeros(batch, h * w, dtype=torch.bool, device=inputs.device)
        return mask.scatter_(1, visible_ids, True).view(batch, h, w)

    def num_visible(self, h: int, w: int) -> int:
        """The visible cells per sample of a :meth:`mask` on an ``h x w`` grid."""
        keep = max(1, round(h * w * (1 - self.mask_ratio)))
        if keep == h * w:
            raise ValueError(f'mask_ratio={self.mask_ratio} masks no cell of the {h}x{w} '
                             f'stride-32 grid, so the loss on masked positions is empty: '
                             f'use a mask_ratio above {0.5 / (h * w):.4g}')
        return keep

    def extract_feat(self, inputs: Tensor, mask: Optional[Tensor] = None,
                     num_visible: Optional[int] = None):
        """Student stage features; ``mask=None`` means all visible. ``num_visible``: the
        visible cells per sample, if known (the ``packed`` backend then reads no count
        back to the host)."""
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.backbone(inputs, mask, num_visible=num_visible)

    def loss(self, inputs: Tensor, data_samples: Optional[List[DataSample]] = None,
             **kwargs) -> Dict[str, Tensor]:
        """``inputs (B, 3, H, W)`` -> ``dict(loss_feat=..., [loss_sim=...])``."""
        mask = self.mask(inputs)  # (B, H/cell, W/cell), True = visible
        # student_loss(inputs, mask, teacher(inputs, mask)), compiled or eager (``compile``)
        return self.compiled_step(self.teacher, self.student_loss, inputs, mask)

    def student_loss(self, inputs: Tensor, mask: Tensor,
                     teacher_tokens: List[Tensor]) -> Dict[str, Tensor]:
        """Student encoder, densify + decode, the head's loss at the masked positions.
        ``mask`` as :meth:`mask` makes it (its number of visible cells per sample)."""
        features = self.extract_feat(inputs, mask, self.num_visible(*mask.shape[-2:]))
        decoded = self.neck(features, mask)
        # the loss positions on the teacher grid: patches at least half in masked cells
        patch_mask = self.teacher.visible_patches(mask, inputs.shape[-2:])
        return self.head.loss(decoded, teacher_tokens, patch_mask)


def student_widths(backbone: dict) -> Tuple[int, ...]:
    """The output widths of an ``HGKDSparseResNet`` config's stages (``out_indices``)."""
    if backbone.get('type') not in ('HGKDSparseResNet', HGKDSparseResNet):
        raise ValueError('neck.in_channels: the stage widths of a backbone other than '
                         f"HGKDSparseResNet ({backbone.get('type')!r}) must be given")
    if backbone.get('depth') not in HGKDSparseResNet.arch_settings:
        raise KeyError(f"invalid depth {backbone.get('depth')} for resnet")
    expansion = get_expansion(HGKDSparseResNet.arch_settings[backbone['depth']][0],
                              backbone.get('expansion'))
    base = backbone.get('base_channels', 64)
    return tuple(base * 2**i * expansion for i in backbone.get('out_indices', (0, 1, 2, 3)))


def _drop_own_keys(module, state_dict, prefix, local_metadata):
    if not prefix:  # the teacher's own state_dict() stays complete
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(module, state_dict, prefix, local_metadata, strict, missing_keys,
                   unexpected_keys, error_msgs):
    for name, value in module.state_dict(keep_vars=True).items():
        state_dict.setdefault(prefix + name, value.detach())
