"""Time full H-GKD training steps (forward ``model.loss``, backward, optimizer step) on
synthetic images, optionally next to the naive composition "mmpretrain SparK step +
teacher forward" and next to variants of the H-GKD model, in the same process, alternated
step by step. ``tools/analysis_tools/benchmark_pretrain.py`` is its command line.

The teacher checkpoint is never loaded (random teacher: same cost). The composition
always runs eager with the teacher reading the full image, so it is the same reference
for every variant (docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import platform
import resource
import statistics
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope

from ..utils import merge_cfg_options
from ..utils.cli import dump_json
from .profiling import profile_steps
from .report import print_table

SPARK_CONFIG = 'mmpretrain::spark/spark_sparse-resnet50_8xb512-amp-coslr-800e_in1k.py'
# SparK's ConvNeXt (mmpretrain's SparseConvNeXt), for ConvNeXt students at their arch
SPARK_CONVNEXT_CONFIG = ('mmpretrain::spark/'
                         'spark_sparse-convnext-small_16xb256-amp-coslr-800e_in1k.py')
MIB = 2**20
SPARK_DEPTHS = (18, 34, 50, 101, 152)
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    return platform.processor() or 'unknown CPU'


def hgkd_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """The config at ``path`` (with ``cfg_options``); stops unless its model is ``HGKD``."""
    cfg = Config.fromfile(path)
    if cfg_options:
        merge_cfg_options(cfg, cfg_options)
    model_type = cfg.get('model', {}).get('type')
    if model_type != 'HGKD':
        raise SystemExit(f"{path} is not an H-GKD config: its model.type is {model_type!r}, "
                         "not 'HGKD'")
    return cfg


def crop_size(cfg: Config) -> int:
    """The training crop size of the config (RandomResizedCrop), else the teacher's."""
    pipeline = cfg.get('train_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        if transform.get('type') in ('RandomResizedCrop', 'LoadRandomResizedCrop',
                                     'LoadJpegCropParams'):
            scale = transform['scale']
            return scale if isinstance(scale, int) else scale[0]
    return cfg.model.teacher.get('img_size', 224)


def hgkd_model_cfg(cfg: Config, args: Any) -> ConfigDict:
    """The config's model with no teacher checkpoint and the command line's choices
    (``args.backend``, ``teacher_input_mode``, ``channels_last``, ``norm_impl``,
    ``compile_teacher``; None keeps the config's)."""
    model = copy.deepcopy(cfg.model)
    model.teacher.checkpoint = None
    if args.backend is not None:
        model.backbone.backend = args.backend
    if args.teacher_input_mode is not None:
        model.teacher.input_mode = args.teacher_input_mode
    if args.channels_last is not None:
        model.channels_last = args.channels_last
    if args.norm_impl is not None:
        model.backbone.norm_impl = args.norm_impl
    if args.compile_teacher is not None:
        model.compile_teacher = args.compile_teacher
    return model


def _swap_sync_norms(node) -> None:
    """SparK's norms for one process: its sync norms need a process group."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'type' and value == 'SparseSyncBatchNorm2d':
                node[key] = 'SparseBatchNorm2d'
            elif key == 'type' and value == 'SyncBN':
                node[key] = 'BN'
            else:
                _swap_sync_norms(value)
    elif isinstance(node, list):
        for value in node:
            _swap_sync_norms(value)


def spark_model_cfg(img_size: int, depth: Optional[int],
                    convnext: Optional[dict] = None) -> dict:
    """mmpretrain's own SparK config, sized for ``img_size``: the ResNet of ``depth``, or
    with ``convnext`` (a ConvNeXt student's backbone config) SparseConvNeXt of its arch and
    drop path rate."""
    if convnext is not None:
        from mmpretrain.models.backbones import ConvNeXt
        arch = convnext.get('arch', 'tiny')
        model = get_config(SPARK_CONVNEXT_CONFIG).model.to_dict()
        model['input_size'] = img_size
        model['backbone'].update(arch=arch, drop_path_rate=convnext.get('drop_path_rate', 0.))
        # the width of the deepest stage, halved per decoder step
        channels = (ConvNeXt.arch_settings[arch] if isinstance(arch, str) else arch)['channels']
        model['enc_dec_norm_dim'] = channels[-1]
        return model
    model = get_config(SPARK_CONFIG).model.to_dict()
    model['input_size'] = img_size
    model['backbone']['depth'] = depth
    # SparseResNet defaults to the sync norm, which the config does not name
    model['backbone']['norm_cfg'] = dict(type='SparseBatchNorm2d')
    model['enc_dec_norm_dim'] = 2048 if depth >= 50 else 512
    _swap_sync_norms(model)
    return model


def build_model(model_cfg: dict, device: torch.device) -> nn.Module:
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    model.init_weights()  # its INFO lines go to the WARNING-level logger of run()
    # one process: SyncBN is BN (as mmengine's Runner does when not distributed)
    return revert_sync_batchnorm(model).to(device).train()


def build_optimizer(model: nn.Module, optimizer_cfg: dict,
                    paramwise_cfg: Optional[dict]) -> torch.optim.Optimizer:
    """The config's optimizer with its ``paramwise_cfg`` groups, as the Runner builds it
    (mmengine's groups, frozen teacher skipped quietly); fused for Adam/AdamW where torch
    supports it."""
    from hgkd_mm.engine import FrozenAwareOptimWrapperConstructor

    def build(optimizer: dict) -> torch.optim.Optimizer:
        wrapper = dict(type='OptimWrapper', optimizer=optimizer)
        return FrozenAwareOptimWrapperConstructor(wrapper, paramwise_cfg)(model).optimizer

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if optimizer_cfg['type'] in ('Adam', 'AdamW'):
            with contextlib.suppress(RuntimeError, TypeError, ValueError):
                return build(dict(optimizer_cfg, fused=True))
        return build(optimizer_cfg)


def teacher_reading_full_image(teacher: nn.Module) -> nn.Module:
    """The same teacher (shared weights) in ``input_mode='full'``."""
    full = copy.copy(teacher)
    full.input_mode = 'full'
    return full


def state_bytes(modules: Iterable[nn.Module],
                optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Bytes of parameters, buffers and optimizer state (each storage counted once)."""
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    if optimizer is not None:
        tensors += [v for state in optimizer.state.values() for v in state.values()
                    if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def reserved_during(device: torch.device,
                    warm_up: Callable[[], Any]) -> Tuple[Any, Optional[float]]:
    """``warm_up()`` and, on CUDA, the peak memory the caching allocator reserved during it
    above what it held before, in MiB, after releasing the unused cache: a model's own
    footprint, its CUDA-graph pool included (which ``max_memory_allocated`` misses)."""
    if device.type != 'cuda':
        return warm_up(), None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_reserved()
    result = warm_up()
    torch.cuda.synchronize()
    return result, (torch.cuda.max_memory_reserved() - before) / MIB


# ----------------------------------------------------------------------------- timing
class Step:
    """One training step of a model, with its timings and transient memory.

    On the CPU the process CPU time of each step is recorded next to the wall time: on a
    shared machine it does not count the time other jobs hold the cores (with one
    thread it is the step's compute time; with more it also counts OpenMP spin-waits).
    """

    def __init__(self, name: str, run: Callable[[], None], static_bytes: Callable[[], int]):
        self.name = name
        self.run = run
        self.static_bytes = static_bytes
        self.times_ms: List[float] = []
        self.cpu_times_ms: List[float] = []
        self.transient_bytes = 0
        self.reserved_bytes = 0
        self.warmup_reserved_mib: Optional[float] = None  # reserved_during() of its warm-up

    def timed(self, device: torch.device) -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start_bytes = torch.cuda.memory_allocated()
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            self.run()
            end.record()
            torch.cuda.synchronize()
            self.times_ms.append(start.elapsed_time(end))
            self.transient_bytes = max(self.transient_bytes,
                                       torch.cuda.max_memory_allocated() - start_bytes)
            self.reserved_bytes = max(self.reserved_bytes, torch.cuda.max_memory_reserved())
        else:
            start_s, start_cpu_s = time.perf_counter(), time.process_time()
            self.run()
            self.times_ms.append((time.perf_counter() - start_s) * 1000)
            self.cpu_times_ms.append((time.process_time() - start_cpu_s) * 1000)

    def summary(self, batch: int, device: torch.device) -> dict:
        median = statistics.median(self.times_ms)
        result = dict(ms_median=median, ms_min=min(self.times_ms), ms_max=max(self.times_ms),
                      img_per_s=batch / median * 1000, iters=len(self.times_ms),
                      ms_all=self.times_ms)
        if device.type == 'cuda':
            result['peak_memory_mib'] = (self.static_bytes() + self.transient_bytes) / MIB
            # the caching allocator's peak for the whole process (both models): CUDA graph
            # replays allocate nothing, so the line above misses their pool
            result['peak_reserved_mib'] = self.reserved_bytes / MIB
            result['warmup_reserved_mib'] = self.warmup_reserved_mib
        else:
            result['cpu_ms_median'] = statistics.median(self.cpu_times_ms)
            result['cpu_ms_min'] = min(self.cpu_times_ms)
            result['cpu_ms_all'] = self.cpu_times_ms
        return result


def total_loss(losses: Dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(v for k, v in losses.items() if 'loss' in k)


def clip_and_step(optimizer: torch.optim.Optimizer, params: List[nn.Parameter],
                  clip_grad: Optional[dict]) -> None:
    if clip_grad:
        nn.utils.clip_grad_norm_(params, **clip_grad)
    optimizer.step()


def training_step(loss_fn: Callable[[], Dict[str, torch.Tensor]],
                  optimizer: torch.optim.Optimizer, params: List[nn.Parameter],
                  autocast: Callable[[], torch.autocast],
                  clip_grad: Optional[dict]) -> Callable[[], None]:
    """forward (``loss_fn`` under ``autocast()``), backward, clip, optimizer step."""

    def run() -> None:
        with autocast():
            loss = total_loss(loss_fn())
        loss.backward()
        clip_and_step(optimizer, params, clip_grad)
        optimizer.zero_grad(set_to_none=True)

    return run


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB


# ----------------------------------------------------------------------------- main
@dataclasses.dataclass
class Bench:
    """What both measured steps share."""
    device: torch.device
    inputs: torch.Tensor  # (B, 3, H, W)
    amp: bool
    optimizer_cfg: dict
    paramwise_cfg: Optional[dict]
    clip_grad: Optional[dict]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def step(self, name: str, model: nn.Module, loss_fn: Callable[[], Dict[str, torch.Tensor]],
             extra_modules: Tuple[nn.Module, ...] = ()) -> Tuple[Step, torch.optim.Optimizer]:
        """A timed training step of ``model``'s trainable parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = build_optimizer(model, self.optimizer_cfg, self.paramwise_cfg)
        run = training_step(loss_fn, optimizer, params, self.autocast, self.clip_grad)
        modules = (model, *extra_modules)
        step = Step(name, run,
                    lambda: state_bytes(modules, optimizer) + self.inputs.nbytes)
        return step, optimizer


def warm_up_hgkd(bench: Bench, model_cfg: ConfigDict, compiled: bool, warmup: int,
                 seed: int, compile_mode: Optional[str] = None, name: str = 'H-GKD',
                 change: Optional[Callable[[nn.Module], None]] = None
                 ) -> Tuple[Step, nn.Module, torch.optim.Optimizer, dict]:
    """Build (``change`` the built model, if given) and warm up the H-GKD step with the
    model's own ``compile`` switch; the model falls back to eager if compiling its forward
    fails, this falls back if the backward does."""

    def build(compile_now: bool):
        torch.manual_seed(seed)
        cfg = dict(model_cfg, compile=compile_now)
        if not compile_now or compile_mode:  # eager, or the mode given here: no cuda_graphs
            cfg.update(compile=dict(mode=compile_mode) if compile_now else False,
                       cuda_graphs=False)
        model = build_model(cfg, bench.device)
        if change is not None:
            change(model)
        step, optimizer = bench.step(name, model, lambda: model.loss(bench.inputs))
        return step, model, optimizer

    step, model, optimizer = build(compiled)
    try:
        for _ in range(max(warmup, int(compiled))):  # the compiler runs in the first step
            step.run()
        compiled_with = model.compiled_step.compiled_with
        used = compiled_with is not None
        return step, model, optimizer, dict(
            requested=compiled, used=used, mode=(compiled_with or {}).get('mode', compile_mode),
            teacher=used and model.compiled_step.teacher_inside,
            error=None if used or not compiled else 'model fell back to eager (see its warning)')
    except Exception as error:  # noqa: BLE001  any compiler failure: fall back to eager
        if not compiled:
            raise
        message = f'{type(error).__name__}: {error}'.splitlines()[0]
        print(f'WARNING: torch.compile failed ({message}); running eager', flush=True)
    step, model, optimizer = build(False)
    for _ in range(warmup):
        step.run()
    return step, model, optimizer, dict(requested=True, used=False, mode=compile_mode,
                                        teacher=False, error=message)


def warm_up_composition(bench: Bench, teacher: nn.Module, depth: Optional[int], warmup: int,
                        seed: int, convnext: Optional[dict] = None) -> Step:
    """mmpretrain's SparK step plus ``teacher``'s forward on the full image, eager
    (``convnext``: :func:`spark_model_cfg`'s)."""
    torch.manual_seed(seed)
    spark = build_model(spark_model_cfg(bench.inputs.shape[-1], depth, convnext),
                        bench.device)
    teacher = teacher_reading_full_image(teacher)

    def loss() -> Dict[str, torch.Tensor]:
        teacher(bench.inputs)
        return spark.loss(bench.inputs, None)

    step, _ = bench.step('SparK + teacher', spark, loss, extra_modules=(teacher, ))
    for _ in range(warmup):
        step.run()
    return step


def environment(device: torch.device) -> dict:
    import mmengine
    import mmpretrain
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return dict(device=device.type, device_name=device_name(device), cpu_count=os.cpu_count(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                cuda=torch.version.cuda if device.type == 'cuda' else None,
                triton=triton_version, mmpretrain=mmpretrain.__version__,
                mmengine=mmengine.__version__)



def run(args) -> dict:
    """Run the benchmark with the command line's ``args`` (an ``argparse.Namespace`` of
    ``tools/analysis_tools/benchmark_pretrain.py``); returns (and with ``args.out``
    writes) the result dict."""
    device = torch.device(args.device)
    on_cuda = device.type == 'cuda'
    if args.threads:
        torch.set_num_threads(args.threads)
    if on_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    import hgkd_mm  # noqa: F401  registers the H-GKD modules
    # a new current logger at WARNING: init_weights() logs every tensor at INFO
    MMLogger.get_instance(f'benchmark_pretrain_{time.time_ns()}', log_level='WARNING')
    cfg = hgkd_config(args.config, args.cfg_options)
    backend = args.backend or cfg.model.backbone.get('backend', 'masked')
    if args.norm_impl == 'triton' and backend != 'masked':
        raise SystemExit(f'--norm-impl triton: the Triton kernels are the masked norms of '
                         f"backend 'masked', and {args.config} uses '{backend}': add "
                         '--backend masked')
    img_size = args.img_size or crop_size(cfg)
    torch.manual_seed(args.seed)
    clip_grad = cfg.optim_wrapper.get('clip_grad')
    paramwise_cfg = cfg.optim_wrapper.get('paramwise_cfg')
    bench = Bench(device, torch.randn(args.batch_size, 3, img_size, img_size, device=device),
                  amp=on_cuda if args.amp is None else args.amp,
                  optimizer_cfg=cfg.optim_wrapper.optimizer.to_dict(),
                  paramwise_cfg=paramwise_cfg.to_dict() if paramwise_cfg else None,
                  clip_grad=clip_grad.to_dict() if clip_grad else None)

    model_cfg = hgkd_model_cfg(cfg, args)
    (hgkd, model, optimizer, compile_info), hgkd_reserved = reserved_during(
        device, lambda: warm_up_hgkd(bench, model_cfg, args.compile, args.warmup, args.seed,
                                     args.compile_mode))
    hgkd.warmup_reserved_mib = hgkd_reserved
    hgkd_rss_mib = peak_rss_mib()  # before the composition and the variants exist
    steps = [hgkd]
    # a ConvNeXt student is compared with SparK's ConvNeXt, any other with its ResNet
    convnext = (cfg.model.backbone.to_dict() if 'ConvNeXt' in type(model.backbone).__name__
                else None)
    spark_depth = None if convnext else args.spark_depth or model.backbone.depth
    if args.compare_spark:
        composition, composition_reserved = reserved_during(
            device, lambda: warm_up_composition(bench, model.teacher, spark_depth,
                                                args.warmup, args.seed, convnext))
        if composition_reserved is not None:  # its teacher's weights came with H-GKD's
            composition.warmup_reserved_mib = (composition_reserved
                                               + state_bytes([model.teacher]) / MIB)
        steps.append(composition)
    variants = [warm_up_hgkd(bench, variant_cfg(model_cfg, VARIANTS[name][0]), args.compile,
                             args.warmup, args.seed, args.compile_mode, name,
                             VARIANTS[name][1])[0] for name in args.variant or ()]
    for _ in range(args.iters):  # alternate A, B, A, B: all see the same machine load
        for step in steps + variants:
            step.timed(device)

    result = dict(
        config=args.config, **environment(device), batch_size=args.batch_size,
        img_size=img_size, amp='bf16' if bench.amp else 'fp32', compile=compile_info,
        backend=getattr(model.backbone, 'backend', 'masked'),
        norm_impl=getattr(getattr(model.backbone, 'norm1', None), 'impl', None),
        teacher_input_mode=model.teacher.input_mode, student=type(model.backbone).__name__,
        channels_last=model.channels_last, student_depth=getattr(model.backbone, 'depth', None),
        optimizer=bench.optimizer_cfg['type'],
        optimizer_fused=bool(optimizer.defaults.get('fused')),
        optimizer_groups=len(optimizer.param_groups), clip_grad=bench.clip_grad,
        warmup=args.warmup, hgkd=hgkd.summary(args.batch_size, device))
    if on_cuda:
        result['memory_note'] = ('CUDA: own parameters, buffers, optimizer state and input '
                                 '+ peak transient allocation of one step; warmup_reserved_'
                                 'mib: what the allocator reserved for the model in its '
                                 'warm-up, CUDA-graph pools included')
    else:
        result['hgkd']['peak_rss_mib'] = hgkd_rss_mib
        result['memory_note'] = ('CPU: peak RSS of the whole process (ru_maxrss); the H-GKD '
                                 'value is taken before the composition was built')
    if args.compare_spark:
        add_comparison(result, steps[1].summary(args.batch_size, device), spark_depth,
                       SPARK_CONVNEXT_CONFIG if convnext else SPARK_CONFIG)
    if variants:
        result['variants'] = variant_speeds(result['hgkd'],
                                            [v.summary(args.batch_size, device) for v in variants],
                                            args.variant)
    if args.out:  # the timings survive a failure in the parts below
        dump_json(args.out, result)
    if args.breakdown:
        result['breakdown'] = breakdown(model, optimizer, bench, args.iters)
    if args.profile:
        result['profile'] = profile_steps(hgkd.run, device, args.profile)
    result['compile'].update(compile_counters())
    print_table(result)
    if args.out:
        dump_json(args.out, result)
    return result


def mask_every_conv(model: nn.Module) -> None:
    """The student's earlier behaviour: every convolution's output multiplied by the mask,
    also where the masked norm that follows masks it anyway."""
    sparse_conv = model.backbone.sparse_conv
    model.backbone.sparse_conv = lambda conv, x, masks, masked_norm_next=False: sparse_conv(
        conv, x, masks)


# name: (model config changes by dotted key, a change to the built model or None)
VARIANTS: Dict[str, Tuple[dict, Optional[Callable[[nn.Module], None]]]] = {
    'decoder_512': ({'neck.channels': 512}, None),
    'channels_last': ({'channels_last': True}, None),
    'masked': ({'backbone.backend': 'masked'}, None),
    'masked_every_conv': ({'backbone.backend': 'masked'}, mask_every_conv),
    'spconv': ({'backbone.backend': 'spconv'}, None),
    'teacher_masked': ({'teacher.input_mode': 'masked'}, None),
}


def variant_cfg(model_cfg: ConfigDict, changes: dict) -> ConfigDict:
    """A copy of ``model_cfg`` with ``changes`` (``{'neck.channels': 512}``) applied."""
    model_cfg = copy.deepcopy(model_cfg)
    for key, value in changes.items():
        *parents, leaf = key.split('.')
        node = model_cfg
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return model_cfg


def variant_speeds(hgkd: dict, summaries: List[dict], names: List[str]) -> Dict[str, dict]:
    """Each variant's summary with its speed relative to the H-GKD step (by CPU time on
    the CPU, by time on CUDA)."""
    key = 'cpu_ms_median' if 'cpu_ms_median' in hgkd else 'ms_median'
    return {name: dict(summary, speed_vs_hgkd=hgkd[key] / summary[key])
            for name, summary in zip(names, summaries)}


def compile_counters() -> dict:
    """Graphs dynamo compiled in this process (a recompile shows as one more) and the
    graphs inductor ran without CUDA graphs although asked to (``reduce-overhead``)."""
    from torch._dynamo.utils import counters
    return dict(graphs=counters['stats']['unique_graphs'],
                cudagraph_skips=counters['inductor']['cudagraph_skips'])


def breakdown(model: nn.Module, optimizer: torch.optim.Optimizer, bench: Bench,
              iters: int) -> dict:
    """Median ms of the H-GKD step's parts, each timed alone after one untimed run: the
    teacher forward (eager), the student's forward + backward on the teacher's tokens
    (compiled or eager as in the step; with the teacher inside the compiled function,
    ``model.compile_teacher``, that function's: teacher and student), and clip +
    optimizer step. Timed apart, the parts do not overlap, so their sum can exceed the
    step's time."""
    inputs, mask = bench.inputs, model.mask(bench.inputs)
    params = [p for p in model.parameters() if p.requires_grad]

    def teacher():
        with bench.autocast():
            return model.teacher(inputs, mask)

    # a copy (with CUDA graphs, later teacher runs would overwrite the graph's output) with
    # the strides of the step's tokens: other strides would compile the student again
    tokens = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                  device=t.device).copy_(t) for t in teacher()]

    def student():
        optimizer.zero_grad(set_to_none=True)  # as in the step: gradients start empty
        with bench.autocast():
            loss = total_loss(model.compiled_step.compiled_part(inputs, mask,
                                                                teacher_output=tokens))
        loss.backward()

    parts = dict(teacher_forward=teacher, student_forward_backward=student,
                 clip_and_optimizer=lambda: clip_and_step(optimizer, params, bench.clip_grad))
    result = {}
    for name, run in parts.items():  # the optimizer part uses the student's gradients
        step = Step(name, run, lambda: 0)
        for _ in range(iters + 1):
            step.timed(bench.device)
        result[f'{name}_ms'] = statistics.median(step.times_ms[1:])
    # with the teacher inside the student's function, its forward is in that part already
    inside = model.compiled_step.teacher_inside
    result['sum_ms'] = sum(result.values()) - inside * result['teacher_forward_ms']
    result['iters'] = iters
    result['student_part'] = 'teacher + student' if inside else 'student'
    optimizer.zero_grad(set_to_none=True)
    return result


def add_comparison(result: dict, composition: dict, spark_depth: Optional[int],
                   spark_config: str = SPARK_CONFIG) -> None:
    """Put the composition's numbers and the H-GKD / composition ratios into ``result``."""
    result['composition'] = dict(composition, spark_config=spark_config,
                                 spark_depth=spark_depth, teacher_input_mode='full',
                                 compiled=False)
    result['ratio_img_per_s'] = result['hgkd']['img_per_s'] / composition['img_per_s']
    if 'cpu_ms_median' in composition:
        result['ratio_cpu_time'] = composition['cpu_ms_median'] / result['hgkd']['cpu_ms_median']
    if result['device'] == 'cuda':
        result['memory_ratio'] = (result['hgkd']['peak_memory_mib'] /
                                  composition['peak_memory_mib'])
        hgkd_reserved, reserved = (part.get('warmup_reserved_mib')
                                   for part in (result['hgkd'], composition))
        if hgkd_reserved and reserved:
            result['reserved_ratio'] = hgkd_reserved / reserved
    else:  # both models are resident: the process's peak says nothing about one of them
        result['composition']['process_peak_rss_mib'] = peak_rss_mib()
        result['memory_ratio'] = None

