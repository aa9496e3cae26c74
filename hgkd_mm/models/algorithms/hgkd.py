"""H-GKD: a frozen MIM ViT teacher distilled into a sparse CNN student."""
import inspect
import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from mmengine.dist import get_world_size, is_distributed
from mmengine.logging import print_log
from torch import Tensor

from mmpretrain.models.backbones.resnet import get_expansion
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..backbones import HGKDSparseResNet

# torch.compile modes that capture the compiled functions in CUDA graphs (on CUDA inputs)
CUDA_GRAPH_MODES = ('reduce-overhead', 'max-autotune')
# the keyword arguments of torch.compile (model.compile as a dict)
COMPILE_ARGS = set(inspect.signature(torch.compile).parameters) - {'model'}


@MODELS.register_module()
class HGKD(BaseSelfSupervisor):
    """Heterogeneous Generative Knowledge Distillation (arXiv 2309.09571).

    One step: mask, teacher, student encoder, densify + decode, loss.

    Args:
        backbone (dict): the sparse student, e.g. ``HGKDSparseResNet``.
        neck (dict): ``HGKDUNetDecoder``; ``out_stride`` defaults to the teacher's
            patch size and ``in_channels`` to the student's stage widths.
        head (dict): ``HGKDDistillHead``; ``target_dims`` defaults to the teacher width.
        teacher (dict): ``FrozenViTTeacher``; kept as ``self.target_generator``
            (mmpretrain's name for it) and left out of saved checkpoints: its
            weights come from ``teacher.checkpoint``.
        mask_ratio (float): fraction of stride-32 cells masked, in (0, 1).
        channels_last (bool): run the student in channels-last memory format (its inputs
            and its convolution weights).
        compile (bool | str | dict): ``torch.compile`` the student's part of the step
            (encoder, decoder, head and loss; the teacher too with ``compile_teacher``).
            ``'auto'`` (default): on when the inputs are on a CUDA device; ``True`` /
            ``False``: always / never; a dict: ``torch.compile`` keyword arguments, on
            everywhere (unknown keys are refused). If compiling or running the compiled
            forward fails in the first step, a warning is logged and training goes on
            eager (with ``compile_teacher``, the student alone is tried before). The
            backward is compiled at the first ``backward()``, outside the model, and a
            batch of another size (a last partial batch) recompiles: errors there stop
            the run with torch's message; ``compile=False`` avoids them.
        compile_teacher (bool): compile the teacher's forward too, in the same function
            as the student's part of the step (so under CUDA graphs one graph holds both;
            two CUDA-graphed functions in a row fail, pytorch#160281), whenever the
            student is compiled. If that fails in the first step, the student alone is
            compiled, the teacher eager. Default False.
        cuda_graphs (bool | str): compile the student with ``mode='reduce-overhead'``,
            which replays its kernels from CUDA graphs instead of launching each from the
            host (on CUDA inputs only). ``'auto'``: in a single process only (DDP with
            CUDA graph trees has open crash reports, pytorch#113809); ``True``: in
            distributed runs too; ``False`` (default): never. Under CUDA graphs the
            student's gradients must be cleared before each step (torch overwrites
            accumulated ones, pytorch#169545): gradient accumulation is refused. The
            graphs are captured in a later step than the first, so a capture failure has
            no eager fallback: ``cuda_graphs=False``.
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
        if 'in_channels' not in neck:
            neck['in_channels'] = student_widths(backbone)
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
        if not (isinstance(compile, (bool, dict)) or compile == 'auto'):
            raise ValueError(f"compile must be True, False, 'auto' or a dict of torch.compile "
                             f'arguments, got {compile!r}')
        unknown = sorted(set(compile) - COMPILE_ARGS) if isinstance(compile, dict) else []
        if unknown:
            raise ValueError(f'compile: {unknown} are not torch.compile arguments (it takes '
                             f'{sorted(COMPILE_ARGS)})')
        for name, value in (('compile_teacher', compile_teacher),
                            ('channels_last', channels_last)):
            if not isinstance(value, bool):
                raise ValueError(f'{name} must be True or False, got {value!r}')
        check_cuda_graphs(cuda_graphs, compile)
        self.mask_ratio = mask_ratio
        self.channels_last = channels_last
        if channels_last:  # the weights too: else every conv converts its weight per call
            for part in (self.backbone, self.neck, self.head):
                part.to(memory_format=torch.channels_last)
        self.compile_cfg = compile  # not self.compile: that is nn.Module.compile()
        self.compile_teacher = compile_teacher
        self.cuda_graphs = cuda_graphs
        # chosen in the first training step: compiled or eager, the teacher inside or not
        self._student_step: Optional[Callable] = None
        self._teacher_inside = False  # _student_step(inputs, mask) runs the teacher too
        # the torch.compile arguments of the student in use (None: eager)
        self.student_compiled_with: Optional[dict] = None
        self._graphed_params: List[torch.nn.Parameter] = []  # the gradient check's
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
        """Random per-sample mask on the stride-32 grid, built on the device.

        Returns ``(B, H/32, W/32)`` bool, True = visible; every sample keeps
        ``round(h * w * (1 - mask_ratio))`` cells (at least one).
        """
        batch, _, height, width = inputs.shape
        if height % self.stride or width % self.stride:
            raise ValueError(f'input size {height}x{width} must be a multiple of {self.stride} '
                             '(the student stride); check the crop/resize size in the pipeline')
        h, w = height // self.stride, width // self.stride
        keep = self.num_visible(h, w)
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
        mask = self.mask(inputs)
        visible = inputs.shape[0] * self.num_visible(*mask.shape[-2:])
        if self.training and visible < 2 and get_world_size() == 1:
            # at stride 32 each visible cell is one position: torch's BatchNorm refuses a
            # single value per channel, and the masked norms must not normalise it to 0
            raise ValueError(f'batch {inputs.shape[0]} with {visible} visible stride-32 cell: '
                             'BatchNorm needs more than one visible value per channel; use '
                             'a larger batch or a lower mask_ratio')
        if self._student_step is None:
            return self._first_step(inputs, mask)
        if self.training and any(p.grad is not None for p in self._graphed_params):
            raise RuntimeError(
                'the student runs in CUDA graphs (model.cuda_graphs), which overwrite '
                'gradients kept from an earlier step (pytorch#169545): clear them before '
                'each step (no optim_wrapper.accumulative_counts > 1, zero_grad with '
                'set_to_none=True), or set model.cuda_graphs=False')
        if self._teacher_inside:
            return self._student_step(inputs, mask)
        return self._student_step(inputs, mask, self.teacher(inputs, mask))

    def student_loss(self, inputs: Tensor, mask: Tensor,
                     teacher_tokens: Tensor) -> Dict[str, Tensor]:
        """Student encoder, densify + decode, head loss (the part that is compiled).
        ``mask`` as :meth:`mask` makes it (its number of visible cells per sample)."""
        features = self.extract_feat(inputs, mask, self.num_visible(*mask.shape[-2:]))
        decoded = self.neck(features, mask)
        return self.head.loss(decoded, teacher_tokens, mask)

    def distill_loss(self, inputs: Tensor, mask: Tensor) -> Dict[str, Tensor]:
        """The teacher's targets, then :meth:`student_loss` (``compile_teacher`` compiles
        this whole)."""
        return self.student_loss(inputs, mask, self.teacher(inputs, mask))

    def _first_step(self, inputs: Tensor, mask: Tensor) -> Dict[str, Tensor]:
        """Pick compiled or eager (``compile``, ``compile_teacher``) and run the step: if
        compiling teacher and student together fails, the student alone; if that fails,
        eager."""
        wanted = self.compile_cfg if self.compile_cfg != 'auto' else inputs.is_cuda
        options = dict(wanted) if isinstance(wanted, dict) else {}
        if wanted is not False and self._use_cuda_graphs(inputs.is_cuda):
            options['mode'] = 'reduce-overhead'
        # bound methods, not the module: a module attribute would be a second submodule
        compiled = None
        if wanted is not False and self.compile_teacher:
            compiled = _try_compile(self.distill_loss, options, 'student and teacher',
                                    'compiling the student alone (model.compile_teacher=False '
                                    'skips this)', inputs, mask)
            self._teacher_inside = compiled is not None
        if compiled is None:
            tokens = self.teacher(inputs, mask)
            if wanted is not False:
                compiled = _try_compile(self.student_loss, options, 'student',
                                        'training eager instead (model.compile=False skips '
                                        'this)', inputs, mask, tokens)
        if compiled is None:
            self._student_step, losses = self.student_loss, self.student_loss(inputs, mask, tokens)
        else:
            self._student_step, losses = compiled
            self.student_compiled_with = options
            if cuda_graphed(options, inputs.is_cuda):  # arms the gradient check
                self._graphed_params = [p for p in self.parameters() if p.requires_grad]
        print_log(f'H-GKD student step: compiled with {options}'
                  f"{', the teacher inside' if self._teacher_inside else ''}, CUDA graphs "
                  f"{'on' if self._graphed_params else 'off'}"
                  if self.student_compiled_with is not None else 'H-GKD student step: eager',
                  logger='current', level=logging.INFO)
        return losses

    def _use_cuda_graphs(self, on_cuda: bool) -> bool:
        """Whether ``cuda_graphs`` applies to this run (CUDA inputs; one process for
        ``'auto'``)."""
        if self.cuda_graphs is False or not on_cuda:
            return False
        if self.cuda_graphs == 'auto' and is_distributed():  # DDP-wrapped, even on 1 GPU
            print_log("model.cuda_graphs='auto': the student is compiled without CUDA graphs "
                      'in this distributed run (DDP with CUDA graph trees has open crash '
                      'reports, pytorch#113809); cuda_graphs=True uses them anyway',
                      logger='current', level=logging.INFO)
            return False
        return True


def cuda_graphed(options: dict, on_cuda: bool) -> bool:
    """Whether ``torch.compile(**options)`` replays CUDA graphs: inductor's graph modes, or
    its ``triton.cudagraphs`` option, on CUDA inputs (other backends ignore both)."""
    graphs = (options.get('mode') in CUDA_GRAPH_MODES
              or bool((options.get('options') or {}).get('triton.cudagraphs')))
    return on_cuda and graphs and options.get('backend', 'inductor') == 'inductor'


def check_cuda_graphs(cuda_graphs, compile) -> None:
    """Refuse ``cuda_graphs`` values and combinations that :class:`HGKD` cannot run."""
    if not (isinstance(cuda_graphs, bool) or cuda_graphs == 'auto'):
        raise ValueError(f"cuda_graphs must be True, False or 'auto', got {cuda_graphs!r}")
    mode = compile.get('mode') if isinstance(compile, dict) else None
    if cuda_graphs is True and compile is False:
        raise ValueError('cuda_graphs=True needs the compiled student, and compile is False')
    if cuda_graphs is not False and mode is not None:
        raise ValueError(f"compile['mode']={mode!r} and cuda_graphs={cuda_graphs!r} both "
                         'choose the torch.compile mode: set one of them')
    if cuda_graphs is not False and isinstance(compile, dict) and 'options' in compile:
        raise ValueError(f"compile['options'] and cuda_graphs={cuda_graphs!r}: torch.compile "
                         "takes a mode or options, not both; set cuda_graphs=False and "
                         "'triton.cudagraphs' in the options")


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


def _try_compile(function: Callable, options: dict, name: str, otherwise: str, *args):
    """``(torch.compile(function, **options), its result on args)``, or None with a warning
    saying what happens ``otherwise`` if compiling or running the compiled function fails."""
    try:
        compiled = torch.compile(function, **options)
        return compiled, compiled(*args)
    except Exception as error:  # noqa: BLE001  any compiler failure: the caller goes on
        print_log(f'torch.compile of the H-GKD {name} failed, {otherwise}: '
                  f'{type(error).__name__}: '
                  f'{str(error).splitlines()[0] if str(error) else ""}',
                  logger='current', level=logging.WARNING)
        return None


def _drop_own_keys(module, state_dict, prefix, local_metadata):
    if not prefix:  # the teacher's own state_dict() stays complete
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_keys(module, state_dict, prefix, local_metadata, strict, missing_keys,
                   unexpected_keys, error_msgs):
    for name, value in module.state_dict(keep_vars=True).items():
        state_dict.setdefault(prefix + name, value.detach())
