"""Convert an H-GKD checkpoint into a plain dense checkpoint of its student.

Every student has the parameter names of its dense mmpretrain backbone, and with an
all-visible mask it computes that backbone, so converting is a key rename (method.md,
step 7)::

    python tools/model_converters/hgkd_to_dense.py IN OUT [--format mmpretrain]

- ``mmpretrain`` (default): ``{'state_dict': {'backbone.<key>': ...}, 'meta': {...}}``,
  loadable by mmpretrain/mmdet/mmseg with
  ``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``; every student
  (ResNet, ResNetV1c/V1d, ResNeXt, ConvNeXt, ConvNeXt V2, MobileNetV2).
- ``torchvision`` / ``timm``: a plain state dict with their key names, for the models they
  have: ResNet and ResNeXt (``resnet50``, ``resnext50_32x4d``; no ``fc.*``),
  ConvNeXt (``convnext_tiny``; timm also ``convnextv2_tiny``; the final norm becomes
  timm's ``head.norm`` / torchvision's ``classifier.0``, no classifier layer) and
  MobileNetV2 (timm ``mobilenetv2_100``, torchvision ``mobilenet_v2``; no classifier).
  Load them with ``strict=False`` (only the classifier is then missing) or into the model
  without its classifier (timm ``num_classes=0``) strictly.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Dict, Mapping, Optional, Sequence, Tuple

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
    """The student encoder's weights with its mmpretrain backbone's names (no prefix)."""
    encoder = {k[len(ENCODER_PREFIX):]: v
               for k, v in state_dict.items() if k.startswith(ENCODER_PREFIX)}
    student_arch(encoder, path)  # validates the layout
    return encoder


def student_arch(encoder: Mapping[str, Tensor], path: str = '<state_dict>') -> str:
    """The student's architecture from its keys: ``'resnet50'``, ``'resnetv1c50'``,
    ``'resnetv1d50'``, ``'resnext50'``, ``'convnext'``, ``'convnext-v2'`` or
    ``'mobilenet-v2'``."""
    if 'downsample_layers.0.0.weight' in encoder:
        return 'convnext-v2' if any('.grn.' in k for k in encoder) else 'convnext'
    if 'conv1.conv.weight' in encoder and 'conv2.conv.weight' in encoder:
        return 'mobilenet-v2'
    if 'stem.0.conv.weight' in encoder:  # mmpretrain's deep stem
        avg_down = any(k.endswith('downsample.2.weight') for k in encoder)
        return f"resnetv1{'d' if avg_down else 'c'}{resnet_depth(encoder, path)}"
    depth = resnet_depth(encoder, path)
    conv1, conv2 = encoder.get('layer1.0.conv1.weight'), encoder.get('layer1.0.conv2.weight')
    grouped = depth >= 50 and conv2.shape[1] != conv1.shape[0]
    return f"{'resnext' if grouped else 'resnet'}{depth}"


def resnet_depth(encoder: Mapping[str, Tensor], path: str = '<state_dict>') -> int:
    """Depth of the ResNet (standard or deep stem) whose weights are ``encoder``."""
    if 'stem.0.conv.weight' not in encoder and (
            'conv1.weight' not in encoder or 'bn1.weight' not in encoder):
        raise ConversionError(f'{path}: the encoder is not a student this converter knows: '
                              'no ResNet stem (backbone.conv1.weight / backbone.bn1.weight '
                              'or backbone.stem.*), ConvNeXt or MobileNetV2 keys')
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


def _renamed(key: str, prefixes: Sequence[Tuple[str, str]]) -> str:
    for old, new in prefixes:
        if key.startswith(old):
            return new + key[len(old):]
    return key


# mmpretrain ConvNeXt block -> timm / torchvision block names
_CONVNEXT_TIMM_BLOCK = (('depthwise_conv.', 'conv_dw.'), ('pointwise_conv1.', 'mlp.fc1.'),
                        ('pointwise_conv2.', 'mlp.fc2.'), ('grn.gamma', 'mlp.grn.weight'),
                        ('grn.beta', 'mlp.grn.bias'))
_CONVNEXT_TORCHVISION_BLOCK = (('depthwise_conv.', 'block.0.'), ('norm.', 'block.2.'),
                               ('pointwise_conv1.', 'block.3.'),
                               ('pointwise_conv2.', 'block.5.'), ('gamma', 'layer_scale'))


def convnext_keys(encoder: StateDict, fmt: str) -> StateDict:
    """mmpretrain ``ConvNeXt`` -> timm / torchvision ``ConvNeXt``. The last stage's output
    norm is their final norm; the other stages' output norms have no place there."""
    out = {}
    for key, value in encoder.items():
        part, _, rest = key.partition('.')
        if part == 'norm3':
            key = ('head.norm.' if fmt == 'timm' else 'classifier.0.') + rest
        elif part.startswith('norm'):
            continue
        elif part == 'downsample_layers':
            stage, rest = rest.split('.', 1)
            if fmt == 'timm':
                key = 'stem.' + rest if stage == '0' else f'stages.{stage}.downsample.{rest}'
            else:
                key = f'features.{2 * int(stage)}.{rest}'
        elif part == 'stages':
            stage, block, rest = rest.split('.', 2)
            if fmt == 'timm':
                key = f'stages.{stage}.blocks.{block}.{_renamed(rest, _CONVNEXT_TIMM_BLOCK)}'
            else:
                key = f'features.{2 * int(stage) + 1}.{block}.'
                key += _renamed(rest, _CONVNEXT_TORCHVISION_BLOCK)
                if rest == 'gamma':  # torchvision's layer scale is (C, 1, 1)
                    value = value[:, None, None]
        out[key] = value
    return out


def mobilenet_v2_keys(encoder: StateDict, fmt: str) -> StateDict:
    """mmpretrain ``MobileNetV2`` -> timm ``mobilenetv2_*`` / torchvision ``mobilenet_v2``."""
    layers = sorted({int(k.split('.')[0][len('layer'):]) for k in encoder
                     if k.startswith('layer')})
    blocks = [len({k.split('.')[1] for k in encoder if k.startswith(f'layer{i}.')})
              for i in layers]
    out = {}
    for key, value in encoder.items():
        part, _, rest = key.partition('.')
        module, _, param = rest.partition('.')  # 'conv' or 'bn', the tensor name
        if part in ('conv1', 'conv2'):  # stem and the final 1x1 convolution
            if fmt == 'timm':
                key = {('conv1', 'conv'): 'conv_stem', ('conv1', 'bn'): 'bn1',
                       ('conv2', 'conv'): 'conv_head', ('conv2', 'bn'): 'bn2'}[part, module]
            else:
                index = 0 if part == 'conv1' else sum(blocks) + 1
                key = f"features.{index}.{0 if module == 'conv' else 1}"
            out[f'{key}.{param}'] = value
            continue
        layer = int(part[len('layer'):])
        block, _, conv, rest = rest.split('.', 3)  # '<j>', 'conv', '<k>', 'conv.weight'
        module, _, param = rest.partition('.')
        expands = f'{part}.{block}.conv.2.conv.weight' in encoder  # expand ratio > 1
        role = (('conv_pw', 'bn1'), ('conv_dw', 'bn2'), ('conv_pwl', 'bn3'))[int(conv)] \
            if expands else (('conv_dw', 'bn1'), ('conv_pw', 'bn2'))[int(conv)]
        if fmt == 'timm':
            key = f"blocks.{layer - 1}.{block}.{role[0] if module == 'conv' else role[1]}"
        else:
            index = 1 + sum(blocks[:layers.index(layer)]) + int(block)
            last = int(conv) == (2 if expands else 1)  # the projection: conv and bn apart
            sub = (f'{conv}.{0 if module == "conv" else 1}' if not last
                   else f"{conv if module == 'conv' else int(conv) + 1}")
            key = f'features.{index}.conv.{sub}'
        out[f'{key}.{param}'] = value
    return out


def arch_family(arch: str) -> str:
    """``'resnext50'`` -> ``'resnext'``; ConvNeXt and MobileNetV2 names are families."""
    return arch.rstrip('0123456789') if arch.startswith('res') else arch


# the models torchvision and timm have, by student architecture
LIBRARY_MODELS = {
    'torchvision': ('resnet', 'resnext', 'convnext', 'mobilenet-v2'),
    'timm': ('resnet', 'resnext', 'convnext', 'convnext-v2', 'mobilenet-v2'),
}


def to_format(encoder: StateDict, fmt: str, arch: Optional[str] = None) -> StateDict:
    """Rename the mmpretrain keys of the ``arch`` student (:func:`student_arch`) for ``fmt``.

    torchvision's and timm's ``ResNet`` (and ResNeXt) use the same names as mmpretrain's
    standard-stem ``ResNet`` (``bn1``, ``layerN.i.downsample.0/1``), BatchNorm buffers
    included, so only the ``backbone.`` prefix differs.
    """
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
    if fmt == 'mmpretrain':
        return {ENCODER_PREFIX + k: v for k, v in encoder.items()}
    arch = arch or student_arch(encoder)
    family = arch_family(arch)
    if family not in LIBRARY_MODELS[fmt]:
        raise ConversionError(f'{fmt} has no {arch} model; use --format mmpretrain')
    if family.startswith('convnext'):
        return convnext_keys(encoder, fmt)
    if family == 'mobilenet-v2':
        return mobilenet_v2_keys(encoder, fmt)
    return dict(encoder)


def _plain_meta(checkpoint: Mapping, in_path: str, arch: str, fmt: str) -> dict:
    """Metadata of plain python types, so ``torch.load(weights_only=True)`` reads it."""
    meta = checkpoint.get('meta') or {}
    plain = dict(source=osp.basename(in_path), converter='hgkd_to_dense', format=fmt,
                 arch=arch)
    depth = arch[len(arch_family(arch)):]
    if depth:
        plain['depth'] = int(depth)
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
    """Write the dense student of the H-GKD checkpoint ``in_path`` to ``out_path``; its
    state dict."""
    return convert_student(in_path, out_path, fmt)[0]


ARCH_NAMES = {'resnet': 'ResNet', 'resnetv1c': 'ResNetV1c', 'resnetv1d': 'ResNetV1d',
              'resnext': 'ResNeXt', 'convnext': 'ConvNeXt', 'convnext-v2': 'ConvNeXt V2',
              'mobilenet-v2': 'MobileNetV2'}


def convert_student(in_path: str, out_path: str,
                    fmt: str = 'mmpretrain') -> Tuple[StateDict, str]:
    """:func:`convert`, also returning the student's architecture (:func:`student_arch`)."""
    if fmt not in FORMATS:
        raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')
    check_out_path(in_path, out_path)
    checkpoint = load_hgkd_checkpoint(in_path)
    encoder = extract_encoder(checkpoint['state_dict'], in_path)
    arch = student_arch(encoder, in_path)
    state_dict = to_format(encoder, fmt, arch)
    if fmt == 'mmpretrain':
        meta = _plain_meta(checkpoint, in_path, arch, fmt)
        save_atomic({'state_dict': state_dict, 'meta': meta}, out_path)
    else:
        save_atomic(state_dict, out_path)
    return state_dict, arch


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', metavar='IN', help='H-GKD checkpoint (mmengine .pth)')
    parser.add_argument('dst', metavar='OUT', help='dense checkpoint to write')
    parser.add_argument('--format', default='mmpretrain', choices=FORMATS,
                        help='key names of OUT (default: mmpretrain, `backbone.` prefix)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        state_dict, arch = convert_student(args.src, args.dst, args.format)
    except (FileNotFoundError, ConversionError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    name = ARCH_NAMES[arch_family(arch)]
    print(f'wrote {args.dst}: {len(state_dict)} tensors ({args.format} {name} keys)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
