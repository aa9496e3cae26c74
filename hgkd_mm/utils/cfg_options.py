"""``--cfg-options`` for tools/train.py and tools/test.py.

mmengine substitutes a config file's variables (``data_root = ...``, then
``dict(data_root=data_root)``) when it parses the file, so overriding such a variable
afterwards changes nothing. Two cases are handled here:

- the downstream configs name the converted checkpoint once, in ``checkpoint = '...'``:
  ``--cfg-options checkpoint=PATH`` is carried to every ``Pretrained`` init_cfg it filled;
- any other top-level option that names a variable the config files read (the
  pretraining configs' ``teacher_checkpoint``, ``img_size``, ``max_epochs``, ...) is
  refused with the settings it filled, instead of being silently ignored.
"""
from __future__ import annotations

import ast
import inspect
import os.path as osp
from typing import Any, Iterator

from mmengine.config import Config
from mmengine.runner import Runner


# top-level keys that the Runner, mmengine's tools or this package's tools read
RUNNER_KEYS = set(inspect.signature(Runner.__init__).parameters) | {
    'sync_bn', 'model_wrapper_cfg', 'runner_type', 'custom_imports', 'data_hint',
    'heldout_dataloader'}


def merge_cfg_options(cfg: Config, options: dict) -> Config:
    """``cfg.merge_from_dict(options)``; ``checkpoint=PATH`` also reaches the init_cfgs, and
    an option that would change only a substituted variable is refused."""
    previous = cfg.get('checkpoint')
    read = substituted_variables(cfg) - RUNNER_KEYS - {'checkpoint'}
    for key in options:
        name = key.split('.')[0]
        if key == 'checkpoint' and not isinstance(previous, str):
            raise ValueError(
                '--cfg-options checkpoint=...: the config has no `checkpoint` variable to '
                "carry to the model's Pretrained init_cfg; set the init_cfg's own key, e.g. "
                'model.backbone.init_cfg.checkpoint=PATH')
        if name in read:
            raise ValueError(f'--cfg-options {key}=...: {_substituted_hint(cfg, key)}')
        if name == 'data_preprocessor' and 'data_preprocessor' in (cfg.get('model') or {}):
            raise ValueError(f'--cfg-options {key}=...: the model sets its own '
                             "data_preprocessor, and the Runner's top-level one only fills a "
                             f'model without one: set model.{key}')
    # carried to the init_cfgs the variable filled before the other options, which may set
    # an init_cfg's own key as well
    if 'checkpoint' in options and not _replace_pretrained(cfg.get('model'), previous,
                                                           options['checkpoint']):
        raise ValueError(
            f"--cfg-options checkpoint=...: no Pretrained init_cfg of the model reads the "
            f"config's `checkpoint` variable ({previous!r}); set the init_cfg's own key, e.g. "
            'model.backbone.init_cfg.checkpoint=PATH')
    cfg.merge_from_dict(options)
    return cfg


def _substituted_hint(cfg: Config, key: str) -> str:
    """Why ``key`` changes nothing, with the settings that hold its value now."""
    name, rest = key.split('.')[0], key.split('.')[1:]
    value = cfg[name]
    for part in rest:
        try:
            value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            value = None
            break
    last = key.split('.')[-1]
    fields = [path for path, held in _leaves(cfg._cfg_dict.to_dict())
              if '.' in path and not path.startswith(name + '.') and _same(held, value)]
    fields.sort(key=lambda path: path.split('.')[-1] != last)  # same name first
    fields = fields[:4]
    example = f'{fields[0]}=...' if fields else 'the setting that uses it'
    return (f'`{name}` is a variable of the config file, substituted into the settings '
            'that use it when mmengine parsed the file, so setting it here changes nothing; set '
            "those settings instead (the ones holding this value now: "
            f"{', '.join(fields) or 'none'}), e.g. --cfg-options {example}")


def check_checkpoint_variable(cfg: Config) -> None:
    """Stop when the config file itself sets ``checkpoint = '...'`` but its ``Pretrained``
    init_cfgs load another file: a config that inherits a downstream config and re-sets
    the variable changes the variable only, as the base's init_cfgs were filled from the
    base's own variable when mmengine parsed the base."""
    value = cfg.get('checkpoint')
    loaded = _pretrained_checkpoints(cfg.get('model'))
    if (isinstance(value, str) and loaded and value not in loaded
            and 'checkpoint' in _file_segments(cfg)[-1][1]):
        raise ValueError(
            f"{cfg.filename} sets `checkpoint = {value!r}`, but the model's Pretrained "
            f"init_cfgs load {', '.join(map(repr, sorted(loaded)))} (filled from the base "
            "config's variable when mmengine parsed it); set the init_cfg too, e.g. "
            "model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))")


def _pretrained_checkpoints(node: Any) -> set[str]:
    return {init_cfg['checkpoint'] for init_cfg in _pretrained_init_cfgs(node)
            if isinstance(init_cfg.get('checkpoint'), str)}


def _pretrained_init_cfgs(node: Any) -> Iterator[dict]:
    """Every ``type='Pretrained'`` dict below ``node`` (the dicts themselves: editable)."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained':
            yield node
        values = node.values()
    elif isinstance(node, (list, tuple)):
        values = node
    else:
        return
    for value in values:
        yield from _pretrained_init_cfgs(value)


def substituted_variables(cfg: Config) -> set[str]:
    """The names that the config file and its bases read in their statements."""
    return set().union(*(loads for loads, _ in _file_segments(cfg)))


def _file_segments(cfg: Config) -> list[tuple[set[str], set[str]]]:
    """``(names read, names assigned)`` of each file of the config, the file itself last
    (mmengine keeps each file's text after a line holding the file's path)."""
    segments, lines = [], []
    for line in cfg._text.splitlines() + [None]:
        if line is None or (line.endswith('.py') and osp.isfile(line)):
            try:
                nodes = list(ast.walk(ast.parse('\n'.join(lines))))
            except SyntaxError:
                nodes = []
            if lines:
                segments.append(tuple(
                    {node.id for node in nodes
                     if isinstance(node, ast.Name) and isinstance(node.ctx, kind)}
                    for kind in (ast.Load, ast.Store)))
            lines = []
        else:
            lines.append(line)
    return segments or [(set(), set())]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _leaves(node: Any, prefix: str = '') -> Iterator[tuple[str, Any]]:
    """``(dotted path, value)`` of every value below ``node``, lists included."""
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, (list, tuple)) else None)
    if items is None:
        yield prefix, node
        return
    for key, value in items:
        yield from _leaves(value, f'{prefix}.{key}' if prefix else str(key))
        if isinstance(value, (dict, list, tuple)):
            yield f'{prefix}.{key}' if prefix else str(key), value


def _replace_pretrained(node: Any, old: str, new: str) -> int:
    """Point ``Pretrained`` init_cfgs that load ``old`` at ``new``; how many there were."""
    found = [init_cfg for init_cfg in _pretrained_init_cfgs(node)
             if init_cfg.get('checkpoint') == old]
    for init_cfg in found:
        init_cfg['checkpoint'] = new
    return len(found)
