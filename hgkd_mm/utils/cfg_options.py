"""``--cfg-options`` for tools/train.py and tools/test.py.

The downstream configs name the converted checkpoint once, in a variable at the top
(``checkpoint = '...'``), which fills their ``Pretrained`` init_cfgs when mmengine parses
the file. Overriding the variable afterwards would change nothing, so
``--cfg-options checkpoint=PATH`` is carried to every ``Pretrained`` init_cfg the
variable filled.
"""
from __future__ import annotations

from typing import Any

from mmengine.config import Config


def merge_cfg_options(cfg: Config, options: dict) -> Config:
    """``cfg.merge_from_dict(options)``; ``checkpoint=PATH`` also reaches the init_cfgs."""
    previous = cfg.get('checkpoint')
    cfg.merge_from_dict(options)
    if 'checkpoint' not in options or not isinstance(previous, str):
        return cfg
    replaced = _replace_pretrained(cfg.get('model'), previous, cfg.checkpoint)
    if not replaced:
        raise ValueError(
            f"--cfg-options checkpoint=...: no Pretrained init_cfg of the model reads the "
            f"config's `checkpoint` variable ({previous!r}); set the init_cfg's own key, e.g. "
            'model.backbone.init_cfg.checkpoint=PATH')
    return cfg


def _replace_pretrained(node: Any, old: str, new: str) -> int:
    """Point ``Pretrained`` init_cfgs that load ``old`` at ``new``; how many there were."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and node.get('checkpoint') == old:
            node['checkpoint'] = new
            count += 1
        for value in node.values():
            count += _replace_pretrained(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _replace_pretrained(value, old, new)
    return count
