"""The scripts of ``tools/`` are not a package: tests load them as modules by path."""
import importlib.util
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def load_tool(relative: str):
    """A fresh module of ``tools/<relative>`` (e.g. ``'analysis_tools/probe.py'``), kept in
    ``sys.modules`` (dataclasses look their module up there); its folder is on
    ``sys.path`` while it loads, as tools import their neighbours."""
    path = TOOLS / relative
    name = 'hgkd_tool_' + relative.replace('/', '_').removesuffix('.py')
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module
