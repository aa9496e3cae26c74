"""Make a mismatched ``init_cfg=dict(type='Pretrained', ...)`` an error, not a warning.

mmengine's ``PretrainedInit`` loads with ``strict=False`` and only logs missing keys and
shape mismatches, so e.g. ResNet-18 weights in a ResNet-50 config train from a mostly
random backbone. :class:`StrictPretrainedHook` re-reads each ``Pretrained`` checkpoint
of the model before training and raises, naming the file, unless its keys and shapes
match the module exactly.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_with_prefix
from torch import Tensor, nn

MAX_LISTED = 3  # keys listed per kind of problem


class PretrainedMismatchError(RuntimeError):
    """A ``Pretrained`` checkpoint does not fit the module it initialises."""


def pretrained_init_cfgs(model: nn.Module) -> Iterator[tuple[str, nn.Module, dict]]:
    """``(module name, module, init_cfg)`` for every ``type='Pretrained'`` init_cfg."""
    for name, module in model.named_modules():
        init_cfgs = getattr(module, 'init_cfg', None)
        for init_cfg in init_cfgs if isinstance(init_cfgs, list) else [init_cfgs]:
            if (isinstance(init_cfg, Mapping) and init_cfg.get('type') == 'Pretrained'
                    and init_cfg.get('checkpoint')):
                yield name, module, dict(init_cfg)


def load_pretrained_state_dict(checkpoint: str, prefix: Optional[str] = None,
                               map_location: str = 'cpu') -> Mapping[str, Tensor]:
    """The state dict that ``PretrainedInit`` would load (``prefix`` stripped)."""
    if prefix:
        return _load_checkpoint_with_prefix(prefix, checkpoint, map_location=map_location)
    loaded = _load_checkpoint(checkpoint, map_location=map_location)
    state_dict = loaded.get('state_dict', loaded)
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state_dict.items()}


def check_pretrained(module: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                     module_name: str = 'model') -> int:
    """Raise :class:`PretrainedMismatchError` unless ``checkpoint`` fits ``module`` exactly.

    Returns the number of tensors checked.
    """
    state_dict = load_pretrained_state_dict(checkpoint, prefix)
    expected = module.state_dict()
    problems = {
        'shape mismatch': [f'{k}: {tuple(v.shape)} in the file, {tuple(expected[k].shape)} '
                           'in the model' for k, v in state_dict.items()
                           if k in expected and v.shape != expected[k].shape],
        # mmengine's load_state_dict ignores BN's num_batches_tracked, as older files lack it
        'missing': [k for k in expected
                    if k not in state_dict and not k.endswith('num_batches_tracked')],
        'unexpected': [k for k in state_dict if k not in expected],
    }
    if any(problems.values()):
        counts = ', '.join(f'{len(keys)} {kind}' for kind, keys in problems.items() if keys)
        examples = [f'{kind}: {key}' for kind, keys in problems.items()
                    for key in keys[:MAX_LISTED]]
        raise PretrainedMismatchError(
            f'Pretrained checkpoint {checkpoint} (prefix={prefix!r}) does not match '
            f'{module_name} ({type(module).__name__}): {counts}\n  ' + '\n  '.join(examples))
    return len(expected)


@HOOKS.register_module()
class StrictPretrainedHook(Hook):
    """Before training, check every ``Pretrained`` init_cfg of the model strictly.

    ``before_train`` runs after the Runner has initialised the weights, so the check
    reads what was actually loaded; testing (``tools/test.py``) loads the trained
    model instead and is not checked.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for name, module, init_cfg in pretrained_init_cfgs(model):
            count = check_pretrained(module, init_cfg['checkpoint'], init_cfg.get('prefix'),
                                     module_name=name or 'model')
            print_log(f'Pretrained check passed: {init_cfg["checkpoint"]} -> '
                      f'{name or "model"} ({count} tensors, exact match)', logger='current')
