"""Small helpers for the command-line tools: argparse value types that refuse bad
numbers (argparse names the option in the error) and a JSON writer that never leaves a
half-written file."""
import argparse
import json
import os
import os.path as osp
import tempfile


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be 1 or more, got {value}')
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be 0 or more, got {value}')
    return value


def image_size(text: str) -> int:
    """An argparse type: an input size the ResNet stride divides, a multiple of 32."""
    value = positive_int(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f'must be a multiple of 32 (the ResNet stride), '
                                         f'got {value}')
    return value


def open_fraction(text: str) -> float:
    """An argparse type: a float strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f'must be between 0 and 1 (exclusive), got {value}')
    return value


def json_path(text: str) -> str:
    """An argparse type for an ``--out`` JSON file, checked before the work that fills it:
    not a folder, and in a folder that exists or can be made (no file in the way)."""
    if osp.isdir(text) or text.endswith(os.sep):
        raise argparse.ArgumentTypeError(f'{text} is a folder; give the JSON file to write')
    folder = osp.dirname(osp.abspath(text))
    while not osp.exists(folder):
        folder = osp.dirname(folder)
    if not osp.isdir(folder) or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f'cannot write {text}: {folder} is not a writable '
                                         'folder')
    return text


def dump_json(path: str, obj, indent: int = 1) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, so a
    failure (an object JSON cannot hold, a full disk) leaves any earlier file whole."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path), suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(obj, f, indent=indent)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
