"""One sparse mechanism for any mmpretrain CNN backbone (the ``masked`` semantics).

:class:`SparseCNN` is mixed into a dense backbone class (``class S(SparseCNN, ConvNeXt)``).
At construction the dense ``forward`` is traced once per training mode with
``torch.fx``, and every call of a layer in the graph is rewritten to take the mask as an
argument:

- ``Conv2d`` (strided, depthwise, grouped), ``MaxPool2d``, ``AvgPool2d``, ``Linear`` on
  channel-last maps, ``LayerNorm`` (mmpretrain's channels-first or -last ``LN2d`` too)
  and ``GRN``: the layer, then its output times the mask (zero at masked positions);
- ``BatchNorm2d`` / ``SyncBatchNorm``: statistics over visible positions only
  (:class:`MaskedBatchNorm2d` / :class:`MaskedSyncBatchNorm2d`, the same parameters and
  buffers);
- ``AdaptiveAvgPool2d(1)`` (squeeze-excite): the mean over visible positions; what follows
  it is a per-sample vector and runs unchanged;
- parameter-free layers that keep zeros (ReLU, GELU, drop path, ...): unchanged. Residual
  adds of two maps that are zero where masked stay so.

GRN's global norm then covers the visible positions only, since its input is zero
elsewhere. Every other layer type is refused by name when the student is built.

The rewritten forward is a plain function of ``(module, inputs, masks)``: the mask is an
argument of every call and no module or class holds it, so students with different masks
can run in one process (and in threads), and ``torch.compile`` traces it as ordinary code.
"""
import inspect
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmpretrain.models.utils import GRN, LayerNorm2d

from .masked_ops import MaskedBatchNorm2d, MaskPyramid, to_masked_norm

# layers whose output is masked; the layout of the map they return
_CHANNEL_FIRST = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_DATA_FORMAT = (LayerNorm2d, GRN)  # mmpretrain's: forward(x, data_format=...)
_CHANNEL_LAST = (nn.Linear, nn.LayerNorm)  # on (B, H, W, C)
# in the backbone's own code these would mix masked and visible positions
_MIXING_METHODS = {'mean', 'sum', 'amax', 'amin', 'max', 'min', 'std', 'var', 'norm'}
_MIXING_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.norm, F.adaptive_avg_pool2d,
                     F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, F.conv2d,
                     F.batch_norm, F.layer_norm, F.group_norm, F.linear, F.interpolate}


def mask_like(masks: MaskPyramid, out: Tensor, channel_last: bool) -> Tensor:
    """The mask ``(B, 1, H, W)`` (``(B, H, W, 1)`` when ``channel_last``) for ``out``."""
    if out.dim() != 4:
        raise ValueError(f'a sparse layer returned a {out.dim()}-d tensor {tuple(out.shape)}; '
                         'expected a (B, C, H, W) or (B, H, W, C) feature map')
    if channel_last:
        return masks.of_size(tuple(out.shape[1:3]), out.dtype).permute(0, 2, 3, 1)
    return masks.at(out)


def masked_layer(module: nn.Module, masks: MaskPyramid, channel_last: bool, x: Tensor,
                 *args, **kwargs) -> Tensor:
    """``module(x)`` with zeros at masked positions."""
    out = module(x, *args, **kwargs)
    return out * mask_like(masks, out, channel_last)


def masked_batch_norm(module: MaskedBatchNorm2d, masks: MaskPyramid, x: Tensor) -> Tensor:
    """BatchNorm over the visible positions of ``x (B, C, H, W)``; zero where masked."""
    return module(x, masks.at(x))


def visible_mean(module: nn.AdaptiveAvgPool2d, masks: MaskPyramid, x: Tensor) -> Tensor:
    """The global average pool over visible positions: ``(B, C, H, W)`` -> ``(B, C, 1, 1)``
    (``x`` is zero where masked)."""
    count = masks.at(x).sum((2, 3), keepdim=True).clamp_min(1)
    return x.sum((2, 3), keepdim=True) / count


def is_global_pool(module: nn.Module) -> bool:
    size = getattr(module, 'output_size', None)
    return isinstance(module, nn.AdaptiveAvgPool2d) and size in (1, (1, 1), [1, 1])


def keeps_zeros(module: nn.Module) -> bool:
    """A parameter-free layer that maps a zero map to zeros (ReLU, GELU, drop path, ...).
    Checked on a zero input with the RNG state restored (drop path draws)."""
    if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
        return False
    zeros = torch.zeros(2, 4, 4, 4)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        try:
            out = module(zeros)
        except Exception:  # noqa: BLE001  not an elementwise layer
            return False
    return isinstance(out, Tensor) and out.shape == zeros.shape and not out.any()


def _data_format(module: nn.Module, node: fx.Node) -> str:
    bound = inspect.signature(module.forward).bind(*node.args, **node.kwargs)
    bound.apply_defaults()
    return bound.arguments.get('data_format', 'channel_first')


class _DenseTracer(fx.Tracer):
    """Traces ``dense_forward``; layers without children are leaves (their own code,
    e.g. drop path's training branch, runs at call time)."""
    traced_func_name = 'dense_forward'

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return next(module.children(), None) is None or super().is_leaf_module(
            module, qualified_name)


def _rule(module: nn.Module, node: fx.Node) -> Tuple[Optional[Callable], tuple]:
    """The sparse replacement of a call of ``module`` on a sparse map and its extra leading
    arguments; ``(None, ())`` keeps the call unchanged. Refuses unknown layers by name."""
    if isinstance(module, MaskedBatchNorm2d):
        return masked_batch_norm, ()
    if isinstance(module, _CHANNEL_FIRST):
        return masked_layer, (False, )
    if isinstance(module, _DATA_FORMAT):
        return masked_layer, (_data_format(module, node) == 'channel_last', )
    if isinstance(module, _CHANNEL_LAST):
        return masked_layer, (True, )
    if is_global_pool(module):
        return visible_mean, ()
    if keeps_zeros(module):
        return None, ()
    raise TypeError(f'sparse student: no sparse rule for layer {node.target!r} '
                    f'({type(module).__name__}) in the backbone; supported: convolutions, '
                    'max/avg pools, BatchNorm/SyncBN, LayerNorm (channels first or last), '
                    'GRN, Linear on channel-last maps, AdaptiveAvgPool2d(1) and '
                    'parameter-free layers that keep zeros')


def sparse_graph(module: nn.Module, training: bool) -> fx.Graph:
    """The dense forward of ``module`` (in ``training`` mode) as a graph of
    ``(x, masks)`` whose every layer call is sparse (module docstring)."""
    modes = {m: m.training for m in module.modules()}
    try:
        for m in modes:
            m.training = training  # attribute only: no train() override runs
        graph = _DenseTracer().trace(module)
    finally:
        for m, mode in modes.items():
            m.training = mode
    placeholders = [n for n in graph.nodes if n.op == 'placeholder']
    if len(placeholders) != 1:
        raise TypeError(f'sparse student: {type(module).__name__}.forward must take one input '
                        f'tensor, got {[n.target for n in placeholders]}')
    with graph.inserting_after(placeholders[0]):
        masks_node = graph.placeholder('masks')

    # what each node holds: a 'sparse' map (zero where masked), a 'global' per-sample
    # vector (after a visible mean), or a 'const' (parameters and what depends on them only)
    kind: Dict[fx.Node, str] = {placeholders[0]: 'sparse', masks_node: 'const'}
    rules: List[Tuple[fx.Node, Callable, tuple]] = []
    for node in list(graph.nodes):
        if node in kind or node.op == 'output':
            continue
        inputs = {kind[n] for n in node.all_input_nodes}
        kind[node] = next((k for k in ('sparse', 'global') if k in inputs), 'const')
        if kind[node] != 'sparse':
            continue
        if node.op == 'call_module':
            layer = module.get_submodule(node.target)
            rule, extra = _rule(layer, node)
            if rule is visible_mean:
                kind[node] = 'global'
            if rule is not None:
                rules.append((node, rule, extra))
        elif (node.op == 'call_method' and node.target in _MIXING_METHODS
              or node.op == 'call_function' and node.target in _MIXING_FUNCTIONS):
            name = node.target if isinstance(node.target, str) else node.target.__name__
            raise TypeError(f'sparse student: {type(module).__name__}.forward applies {name} '
                            'to a feature map, which mixes masked and visible positions '
                            '(e.g. ConvNeXt gap_before_final_norm=True); turn it off')

    for node, rule, extra in rules:
        users = list(node.users)
        if (rule is masked_layer and extra == (False, ) and len(users) == 1
                and any(r is masked_batch_norm and n is users[0] for n, r, _ in rules)):
            continue  # the masked norm that follows masks its input itself
        with graph.inserting_before(node):
            layer = graph.get_attr(node.target)
            sparse = graph.call_function(rule, (layer, masks_node, *extra, *node.args),
                                         dict(node.kwargs))
        node.replace_all_uses_with(sparse)
        graph.erase_node(node)
    graph.lint()
    return graph


def sparse_forward(module: nn.Module, training: bool) -> Callable:
    """``f(module, x, masks)``: :func:`sparse_graph` as Python code whose attribute paths
    are ``module``'s own (so it holds no parameters and no state)."""
    graph_module = fx.GraphModule(module, sparse_graph(module, training))
    return type(graph_module).forward


def to_masked_norms(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` below ``module`` by its masked
    version with the same parameters and buffers (so the same ``state_dict`` keys)."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not isinstance(
                child, MaskedBatchNorm2d):
            setattr(module, name, to_masked_norm(child, isinstance(child, nn.SyncBatchNorm)))
        else:
            to_masked_norms(child)


class _SizeProbe(MaskPyramid):
    """A one-cell mask pyramid that records the feature sizes it is asked for."""

    def __init__(self, mask_grid: Tensor):
        super().__init__(mask_grid)
        self.sizes = []

    def of_size(self, size: tuple, dtype: torch.dtype) -> Tensor:
        self.sizes.append(size)
        return super().of_size(size, dtype)


class _ProbeForward(nn.Module):
    """``student``'s sparse forward with fixed ``masks``, for ``functional_call``."""

    def __init__(self, student: nn.Module, masks: MaskPyramid):
        super().__init__()
        self.student = student
        self.masks = masks

    def forward(self, x: Tensor):
        return self.student._sparse_forwards[self.student.training](self.student, x,
                                                                     self.masks)


def check_mask_cell(mask_cell, stride: int, owner: str) -> int:
    """``mask_cell`` if it is a positive multiple of the student ``stride`` (a position of
    the deepest map must not straddle cells); else a ``ValueError`` naming the option."""
    if not (isinstance(mask_cell, int) and mask_cell > 0 and mask_cell % stride == 0):
        raise ValueError(f'backbone.mask_cell={mask_cell!r} must be a multiple of the '
                         f'student stride {stride} ({owner}): a stride-{stride} position '
                         'would straddle cells')
    return mask_cell


def cell_grid(inputs: Tensor, mask_cell: int) -> Tuple[int, int]:
    """``(H / mask_cell, W / mask_cell)`` of ``inputs (B, C, H, W)``; refuses sizes that are
    not multiples of the cell."""
    height, width = inputs.shape[-2:]
    if height % mask_cell or width % mask_cell:
        raise ValueError(f'input size {height}x{width} must be a multiple of the mask cell '
                         f'{mask_cell} (backbone.mask_cell); check the crop/resize size in '
                         'the pipeline')
    return height // mask_cell, width // mask_cell


class SparseCNN:
    """Mixin making a dense mmpretrain CNN backbone a submanifold-sparse student.

    ``class HGKDSparseConvNeXt(SparseCNN, ConvNeXt)`` is the whole student: its
    ``state_dict()`` has exactly the dense backbone's keys (BatchNorms become masked
    BatchNorms with the same parameters and buffers).

    Args:
        mask_cell (int, optional): the side of the square mask cells that H-GKD draws
            (:meth:`grid_size`), a multiple of :attr:`stride`; default :attr:`stride`
            (32 for four-stage CNNs; 16 for a student whose last stage has stride 16).
        *args, **kwargs: the dense backbone's.

    Attributes:
        out_channels (tuple): width of each returned stage.
        out_strides (tuple): stride of each returned stage.
        stride (int): the largest stride of any feature map the backbone computes; a mask
            cell must be a multiple of it (a position of that map must not straddle
            cells).

    Forward:
        ``inputs (B, C, H, W)``; ``mask (B, H/cell, W/cell)`` bool (True = visible) for a
        square ``cell`` that is a multiple of :attr:`stride`, or None (the dense forward).
        ``num_visible`` is accepted and unused (the ``packed`` ResNet's argument). Returns
        the dense backbone's stage outputs, zero at masked positions.
    """

    def __init__(self, *args, mask_cell: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        to_masked_norms(self)
        self._sparse_forwards = self._trace()
        self.out_channels, self.out_strides, self.stride = self._probe()
        self.mask_cell = check_mask_cell(self.stride if mask_cell is None else mask_cell,
                                         self.stride, type(self).__name__)

    def _trace(self) -> Dict[bool, Callable]:
        return {mode: sparse_forward(self, mode) for mode in (True, False)}

    def dense_forward(self, x: Tensor):
        """The dense backbone's forward (traced by :func:`sparse_graph`)."""
        return super().forward(x)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None,
                num_visible: Optional[int] = None):
        if mask is None:
            return self.dense_forward(inputs)
        masks = self.mask_pyramid(inputs, mask)
        return self._sparse_forwards[self.training](self, inputs * masks.at(inputs), masks)

    def grid_size(self, inputs: Tensor) -> Tuple[int, int]:
        """``(H / mask_cell, W / mask_cell)``, the mask grid H-GKD draws for ``inputs (B, C,
        H, W)``; refuses sizes that are not multiples of the cell."""
        return cell_grid(inputs, self.mask_cell)

    def mask_pyramid(self, inputs: Tensor, mask: Tensor) -> MaskPyramid:
        """Check ``mask`` against ``inputs`` and :attr:`stride`."""
        if mask.dim() != 3 or mask.dtype != torch.bool or len(mask) != len(inputs):
            raise ValueError(f'mask must be a (B, h, w) bool tensor with B={len(inputs)}, got '
                             f'{mask.dtype} {tuple(mask.shape)}')
        (height, width), (h, w) = inputs.shape[-2:], mask.shape[-2:]
        if height % h or width % w or height // h != width // w:
            raise ValueError(f'mask grid {h}x{w} does not split the {height}x{width} input '
                             'into square cells')
        cell = height // h
        if cell % self.stride:
            raise ValueError(f'mask cell {cell} px must be a multiple of the student stride '
                             f'{self.stride} ({type(self).__name__}): a stride-{self.stride} '
                             'position would straddle cells')
        return MaskPyramid(mask)

    def _probe(self) -> Tuple[Tuple[int, ...], Tuple[int, ...], int]:
        """Stage widths and strides and the largest stride, from one sparse forward on the
        meta device (no compute, no change to parameters, buffers or the RNG)."""
        size = 2048
        masks = _SizeProbe(torch.ones(1, 1, 1, dtype=torch.bool, device='meta'))
        probe = _ProbeForward(self, masks)
        state = {f'student.{name}': torch.empty_like(t, device='meta') for name, t in
                 [*self.named_parameters(), *self.named_buffers()]}
        # mmpretrain's CNNs build their stem first
        stem = next(m for m in self.modules() if isinstance(m, nn.Conv2d))
        inputs = torch.zeros(2, stem.in_channels, size, size, device='meta')
        with torch.no_grad():
            outs = torch.func.functional_call(probe, state, (inputs, ))
        strides = tuple(size // out.shape[-1] for out in outs)
        deepest = size // min(min(s) for s in masks.sizes)
        return tuple(out.shape[1] for out in outs), strides, deepest

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop('_sparse_forwards')  # generated code: traced again on unpickling
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._sparse_forwards = self._trace()
