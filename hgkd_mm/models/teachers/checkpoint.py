"""Teacher checkpoints: safe loading, format detection, key conversion, strict loading.

Three formats are recognised (after unwrapping a ``state_dict`` or ``model`` container):

- mmpretrain model-zoo files: ``backbone.*`` (``VisionTransformer``) and ``neck.*``
  (``MAEPretrainDecoder``); other prefixes (``head.``, ``data_preprocessor.``) are ignored.
- timm ViT state dicts: ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``, ...;
  classifier keys (``head.*``, ``fc_norm.*``) are ignored. DINOv2 (``ls1.gamma``
  LayerScale, ``reg_token`` registers) included.
- the official DINOv2 release (``dinov2_vits14_pretrain.pth``, ...): timm names, with
  ``register_tokens`` and a ``mask_token`` only used in DINOv2's own training, dropped.
  With registers its position embedding has an entry for the class token but not for the
  registers; it is folded into the class token, as timm converts these files, so the
  teacher takes them with ``pos_embed_prefix=False``.
- the official MAE release (``{'model': ...}``): timm-style encoder keys plus, in the
  ``visualize`` files, the decoder (``decoder_*``, ``mask_token``).

Everything is returned with mmpretrain key names, so one strict check covers all three.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import barrier, get_dist_info
from torch import Tensor, nn

from hgkd_mm.utils.checkpoint_io import safe_load

StateDict = Dict[str, Tensor]

# timm block names -> mmpretrain ``TransformerEncoderLayer`` names (prefix match).
_TIMM_BLOCK_KEYS = (
    ('norm1.', 'ln1.'),
    ('attn.qkv.', 'attn.qkv.'),
    ('attn.proj.', 'attn.proj.'),
    ('ls1.gamma', 'attn.gamma1.weight'),
    ('norm2.', 'ln2.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
    ('ls2.gamma', 'ffn.gamma2.weight'),
)
_TIMM_CLASSIFIER_PREFIXES = ('head.', 'fc_norm.')
_MAE_DECODER_PREFIXES = ('decoder_', 'mask_token')
_MMPRETRAIN_ENCODER, _MMPRETRAIN_DECODER = 'backbone.', 'neck.'


def _rename_timm_block(key: str) -> str:
    """``'mlp.fc1.weight'`` -> ``'ffn.layers.0.0.weight'``; unknown keys are kept."""
    for timm_prefix, mm_prefix in _TIMM_BLOCK_KEYS:
        if key.startswith(timm_prefix):
            return mm_prefix + key[len(timm_prefix):]
    return key


def convert_timm_vit(state_dict: StateDict) -> StateDict:
    """timm ``VisionTransformer`` names -> :class:`TeacherViT` names (mmpretrain's, plus
    ``register_tokens``).

    Classifier keys are dropped. Unknown keys are kept unchanged, so that the strict load
    reports them as unexpected instead of silently dropping them.
    """
    if 'register_tokens' in state_dict and 'pos_embed' in state_dict:  # official DINOv2
        state_dict = dict(state_dict)
        pos_embed = state_dict.pop('pos_embed')
        state_dict['cls_token'] = state_dict['cls_token'] + pos_embed[:, :1]
        state_dict['pos_embed'] = pos_embed[:, 1:]
    converted = {}
    for key, value in state_dict.items():
        if key.startswith(_TIMM_CLASSIFIER_PREFIXES):
            continue
        if key == 'reg_token':
            key = 'register_tokens'
        elif key.startswith('patch_embed.proj.'):
            key = 'patch_embed.projection.' + key[len('patch_embed.proj.'):]
        elif key.startswith('blocks.'):
            index, rest = key[len('blocks.'):].split('.', 1)
            key = f'layers.{index}.{_rename_timm_block(rest)}'
        elif key.startswith('norm.'):
            key = 'ln1.' + key[len('norm.'):]
        converted[key] = value
    return converted


def convert_mae_decoder(state_dict: StateDict) -> StateDict:
    """Official MAE decoder names -> mmpretrain ``MAEPretrainDecoder`` names.

    ``decoder_embed``, ``mask_token``, ``decoder_pos_embed`` and ``decoder_pred`` keep their
    names; blocks use timm names (as in the encoder) and ``decoder_norm`` becomes ``ln1``.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith('decoder_blocks.'):
            index, rest = key[len('decoder_blocks.'):].split('.', 1)
            key = f'decoder_blocks.{index}.{_rename_timm_block(rest)}'
        elif key.startswith('decoder_norm.'):
            key = 'ln1.' + key[len('decoder_norm.'):]
        converted[key] = value
    return converted


def _strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def resolve_url(path: str) -> str:
    """A local file for ``path``; URLs map to torch hub's checkpoint cache.

    A URL is downloaded once (like mmengine's ``load_from_http``) into
    ``$TORCH_HOME/hub/checkpoints/<file name>``: in a distributed run rank 0 downloads it
    while the others wait, then they read the cached file (or, on other machines,
    download it too).
    On a machine without internet, put the file there (or set ``teacher.checkpoint`` to a
    local path).
    """
    if not path.startswith(('http://', 'https://')):
        return path
    cached = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(path))
    rank, world_size = get_dist_info()
    error = _download(path, cached) if rank == 0 else None
    if world_size > 1:
        barrier()  # also when the download failed: no process waits forever
    if error is None and rank > 0:
        error = _download(path, cached)  # another machine's cache, or a fresh try
    if error is not None:
        raise FileNotFoundError(
            f'Teacher checkpoint {path!r} (the teacher.checkpoint option) is not cached at '
            f'{cached!r} and could not be downloaded ({error}). Download it there, or set '
            'teacher.checkpoint to a local file.') from error
    return cached


def _download(url: str, cached: str) -> Optional[Exception]:
    """Download ``url`` to ``cached`` unless it is there; the error, if any."""
    if osp.isfile(cached):
        return None
    try:
        os.makedirs(osp.dirname(cached), exist_ok=True)
        torch.hub.download_url_to_file(url, cached)
    except Exception as error:  # noqa: BLE001  no network, 404, ...
        return error
    return None


def load_teacher_checkpoint(path: str) -> Tuple[StateDict, Optional[StateDict]]:
    """Read a teacher checkpoint in any supported format.

    Args:
        path: checkpoint file (the ``teacher.checkpoint`` option).

    Returns:
        ``(encoder_state, decoder_state)``: the encoder with mmpretrain
        ``VisionTransformer`` key names, and the MAE decoder with ``MAEPretrainDecoder``
        key names, or ``None`` when the file has no decoder.
    """
    path = resolve_url(path)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Teacher checkpoint not found: {path!r} (set by the teacher.checkpoint option)')
    checkpoint = safe_load(path)
    state_dict = checkpoint
    for container in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(container), dict):
            state_dict = checkpoint[container]
            break
    if not isinstance(state_dict, dict) or not all(
            isinstance(v, Tensor) for v in state_dict.values()):
        found = list(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ValueError(
            f'Teacher checkpoint {path!r}: expected a state dict of tensors, directly or under '
            f"'state_dict' or 'model'; found {found}")

    if any(k.startswith(_MMPRETRAIN_ENCODER) for k in state_dict):
        encoder = _strip_prefix(state_dict, _MMPRETRAIN_ENCODER)
        decoder = _strip_prefix(state_dict, _MMPRETRAIN_DECODER)
        if 'decoder_embed.weight' not in decoder:  # no neck, or not an MAE decoder
            decoder = {}
    else:  # timm names, with the decoder when it is an official MAE file
        is_decoder_key = lambda k: k.startswith(_MAE_DECODER_PREFIXES)  # noqa: E731
        encoder = convert_timm_vit({k: v for k, v in state_dict.items() if not is_decoder_key(k)})
        decoder = convert_mae_decoder({k: v for k, v in state_dict.items() if is_decoder_key(k)})
        if set(decoder) == {'mask_token'}:  # DINOv2's (iBOT) mask token: no MAE decoder
            decoder = {}
    return encoder, (decoder or None)


def _format_keys(title: str, keys: List[str], limit: int = 30) -> str:
    if not keys:
        return ''
    more = f' ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return f'\n  {title} ({len(keys)}): {", ".join(keys[:limit])}{more}'


def _hints(keys: List[str]) -> str:
    """The teacher options that the mismatched ``keys`` point to."""
    hints = []
    if any('.gamma1.' in k or '.gamma2.' in k for k in keys):
        hints.append('LayerScale weights (gamma1/gamma2) on one side only: set '
                     'teacher.layer_scale_init_value > 0 for checkpoints with LayerScale '
                     '(DINOv2: 1e-5), 0 for those without')
    if any(k.startswith('register_tokens') for k in keys):
        hints.append('register tokens on one side only: set teacher.num_register_tokens '
                     '(4 for *_reg4_dinov2) and teacher.pos_embed_prefix=False')
    if any(k.startswith('pos_embed') for k in keys):
        hints.append('pos_embed: teacher.img_size must be the checkpoint\'s training size '
                     '(518 for DINOv2, 224 for MAE; other input sizes are interpolated), and '
                     'teacher.pos_embed_prefix=False for position embeddings without the '
                     'class token (timm no_embed_class, DINOv2 with registers)')
    return ''.join(f'\n  hint: {hint}' for hint in hints)


def load_state_dict_strict(module: nn.Module, state_dict: StateDict, path: str,
                           part: str = 'teacher') -> None:
    """Load ``state_dict`` into ``module``; any key or shape difference is an error.

    Raises:
        RuntimeError: naming ``path`` and listing the missing, unexpected and
            shape-mismatched keys (e.g. a ViT-S file given to a ViT-B teacher).
    """
    expected = module.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    mismatched = [
        f'{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}'
        for k in sorted(expected.keys() & state_dict.keys())
        if state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f'Teacher checkpoint {path!r} does not match the {part} '
            f'({type(module).__name__}); check the teacher arch, patch_size and img_size.'
            + _hints(missing + unexpected + mismatched)
            + _format_keys('missing keys', missing)
            + _format_keys('unexpected keys', unexpected)
            + _format_keys('shape mismatches (checkpoint vs model)', mismatched))
    module.load_state_dict(state_dict, strict=True)
