"""Convert an H-GKD checkpoint into a plain dense ResNet checkpoint.

The sparse student (``HGKDSparseResNet``) has mmpretrain ``ResNet`` parameter names,
and with an all-visible mask it computes the dense ResNet, so converting is a key
rename (method.md, step 7)::

    python tools/model_converters/hgkd_to_dense.py IN OUT [--format mmpretrain]

- ``mmpretrain`` (default): ``{'state_dict': {'backbone.<key>': ...}, 'meta': {...}}``,
  loadable by mmpretrain/mmdet/mmseg with
  ``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``.
- ``torchvision`` / ``timm``: a plain state dict with their ``ResNet`` key names
  (no ``fc.*``: load it with ``strict=False``, only ``fc.*`` is then missing).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Dict, Mapping

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]
FORMATS = ('mmpretrain', 'torchvision', 'timm')
ENCODER_PREFIX = 'backbone.'
# Keys only an H-GKD model has: the decoder's mask tokens and the distillation head.
HGKD_MARKERS = ('neck.mask_tokens', 'head.proj.')
# (blocks per stage, bottleneck) -> depth, as mmpretrain's ResNet.arch_settings.
RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}


class ConversionError(ValueError):
    """IN is not a readable H-GKD checkpoint, or OUT cannot be written without harm."""


def load_hgkd_checkpoint(path: str) -> dict:
    """Load ``path`` with the safe unpickler; the dict has a ``state_dict`` key.

    Accepts mmengine checkpoints (``state_dict``, ``meta``, ``message_hub``, ...) and
    a bare state dict of an H-GKD model.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'H-GKD checkpoint not found: {path}')
    from hgkd_mm.utils.checkpoint_io import CheckpointReadError, safe_load
    try:
        checkpoint = safe_load(path)
    except CheckpointReadError as error:  # names the file and why (refused, truncated, ...)
        raise ConversionError(str(error)) from error
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f'{path} holds a {type(checkpoint).__name__}, not a checkpoint dict')
    if 'state_dict' not in checkpoint:
        checkpoint = {'state_dict': checkpoint, 'meta': {}}
    state_dict = checkpoint['state_dict']
    if not isinstance(state_dict, Mapping) or not all(
            isinstance(v, Tensor) for v in state_dict.values()):
        raise ConversionError(f'{path}: state_dict is not a dict of tensors')
    _check_is_hgkd(state_dict, path)
    non_finite = [k for k, v in state_dict.items()
                  if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if non_finite:
        raise ConversionError(f'{path}: NaN or Inf in {len(non_finite)} tensors '
                              f'({", ".join(non_finite[:5])}); not converting a diverged run')
    return dict(checkpoint)


def _check_is_hgkd(state_dict: Mapping[str, Tensor], path: str) -> None:
    has_encoder = any(k.startswith(ENCODER_PREFIX) for k in state_dict)
    has_marker = any(k.startswith(HGKD_MARKERS) for k in state_dict)
    if not (has_encoder and has_marker):
        sample = ', '.join(list(state_dict)[:5]) or 'no keys'
        raise ConversionError(
            f'{path} is not an H-GKD checkpoint: expected `backbone.*` keys and the decoder/'
            f'head keys {HGKD_MARKERS} (got {sample}, ...). Classifier or converted '
            'checkpoints need no conversion.')


def extract_encoder(state_dict: Mapping[str, Tensor], path: str = '<state_dict>') -> StateDict:
    """The student encoder's weights with mmpretrain ``ResNet`` names (no prefix)."""
    encoder = {k[len(ENCODER_PREFIX):]: v
               for k, v in state_dict.items() if k.startswith(ENCODER_PREFIX)}
    resnet_depth(encoder, path)  # validates the layout
    return encoder


def resnet_depth(encoder: Mapping[str, Tensor], path: str = '<state_dict>') -> int:
    """Depth of the standard-stem ResNet whose weights are ``encoder``."""
    if 'conv1.weight' not in encoder or 'bn1.weight' not in encoder:
        raise ConversionError(f'{path}: the encoder is not a standard-stem ResNet '
                              '(no backbone.conv1.weight / backbone.bn1.weight)')
    blocks = []
    for stage in range(1, 5):
        indices = {int(k.split('.')[1]) for k in encoder if k.startswith(f'layer{stage}.')}
        blocks.append(len(indices))
    bottleneck = any(k.endswith('.conv3.weight') for k in encoder)
    depth = RESNET_DEPTHS.get((tuple(blocks), bottleneck))
    if depth is None:
        raise ConversionError(f'{path}: encoder with blocks {blocks} '
                              f'({"Bottleneck" if bottleneck else "BasicBlock"}) is not a '
                              'ResNet-18/34/50/101/152')
    return depth


def to_format(encoder: StateDict, fmt: str) -> StateDict:
    """Rename mmpretrain ``ResNet`` keys for ``fmt``.

    torchvision's and timm's ``ResNet`` use the same names as mmpretrain's standard-stem
    ``ResNet`` (``bn1``, ``layerN.i.downsample.0/1``), BatchNorm buffers included, so
    only the ``backbone.`` prefix differs.
    """
    if fmt == 'mmpretrain':
        return {ENCODER_PREFIX + k: v for k, v in encoder.items()}
    if fmt in ('torchvision', 'timm'):
        return dict(encoder)
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')


def _plain_meta(checkpoint: Mapping, in_path: str, depth: int, fmt: str) -> dict:
    """Metadata of plain python types, so ``torch.load(weights_only=True)`` reads it."""
    meta = checkpoint.get('meta') or {}
    plain = dict(source=osp.basename(in_path), converter='hgkd_to_dense', format=fmt,
                 arch=f'resnet{depth}', depth=depth)
    for key in ('epoch', 'iter'):
        if isinstance(meta.get(key), (int, float)):
            plain[f'pretrain_{key}'] = int(meta[key])
    return plain


def check_out_path(in_path: str, out_path: str) -> None:
    """Refuse an OUT that names a folder or IN itself (which the rename would replace)."""
    if out_path.endswith(os.sep) or osp.isdir(out_path):
        raise ConversionError(f'OUT {out_path} is a folder; give the file to write')
    if osp.exists(out_path) and osp.exists(in_path) and osp.samefile(in_path, out_path):
        raise ConversionError(f'OUT {out_path} is IN {in_path}: writing it would replace the '
                              'H-GKD checkpoint (decoder, head, optimizer); give another OUT')


def save_atomic(obj: object, out_path: str) -> None:
    """``torch.save`` to a temporary file beside ``out_path``, then rename it."""
    from hgkd_mm.utils.checkpoint_io import atomic_write
    try:
        os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    except OSError as error:
        raise ConversionError(f'cannot create the folder of OUT {out_path}: {error}') from error
    with atomic_write(out_path) as file:
        torch.save(obj, file)


def convert(in_path: str, out_path: str, fmt: str = 'mmpretrain') -> StateDict:
    """Write the dense ResNet of the H-GKD checkpoint ``in_path`` to ``out_path``."""
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
    check_out_path(in_path, out_path)
    checkpoint = load_hgkd_checkpoint(in_path)
    encoder = extract_encoder(checkpoint['state_dict'], in_path)
    state_dict = to_format(encoder, fmt)
    if fmt == 'mmpretrain':
        meta = _plain_meta(checkpoint, in_path, resnet_depth(encoder), fmt)
        save_atomic({'state_dict': state_dict, 'meta': meta}, out_path)
    else:
        save_atomic(state_dict, out_path)
    return state_dict


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', metavar='IN', help='H-GKD checkpoint (mmengine .pth)')
    parser.add_argument('dst', metavar='OUT', help='dense ResNet checkpoint to write')
    parser.add_argument('--format', default='mmpretrain', choices=FORMATS,
                        help='key names of OUT (default: mmpretrain, `backbone.` prefix)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        state_dict = convert(args.src, args.dst, args.format)
    except (FileNotFoundError, ConversionError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    print(f'wrote {args.dst}: {len(state_dict)} tensors ({args.format} ResNet keys)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
