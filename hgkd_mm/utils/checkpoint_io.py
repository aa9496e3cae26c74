"""Read checkpoints safely and write them atomically.

torch >= 2.6 loads with ``weights_only=True`` by default. mmengine 0.10.7 saves its
``message_hub`` in every checkpoint: ``HistoryBuffer`` objects holding numpy arrays
and scalars, whose pickled state also names the buffer's statistics methods through
``getattr(HistoryBuffer, 'mean')``. So ``--resume`` and ``load_checkpoint`` fail on the
unpickler's allowlist. Allowlisting these globals keeps the safe loader;
``weights_only=False`` is never needed.

:func:`safe_load` names the file and the reason when a checkpoint does not load;
:func:`atomic_write` never leaves a partial file under the final name;
:func:`check_resume_checkpoint` checks what ``--resume`` will load before training starts.
"""
from __future__ import annotations

import contextlib
import glob
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import IO, Any, Callable, Iterator, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# what atomic_write names its temporary files: `.NAME.<random>.partial`
PARTIAL_SUFFIX = '.partial'


def _history_buffer_getattr(owner: Any, name: str) -> Callable:
    """``getattr`` as the unpickler sees it, limited to ``HistoryBuffer``'s statistics.

    The builtin ``getattr`` would let a checkpoint reach any attribute of any allowed
    object, which defeats ``weights_only``.
    """
    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'weights_only: getattr({owner!r}, {name!r}) is not allowed')


def mmengine_checkpoint_globals() -> list:
    """The globals, other than tensors, that mmengine/mmpretrain checkpoints pickle.

    Found by loading Runner checkpoints with ``weights_only=True`` until they load:
    ``HistoryBuffer``s of numpy arrays and numpy scalars in the ``message_hub``;
    published mmpretrain checkpoints may also hold a ``ConfigDict`` in ``meta``. numpy
    pickles arrays and scalars through ``multiarray`` functions named
    ``numpy.core.multiarray`` by numpy 1 and ``numpy._core.multiarray`` by numpy 2, so
    both names are listed for the functions of the numpy installed.
    """
    from mmengine.config import ConfigDict
    reconstruct_array = np.zeros(0).__reduce__()[0]
    reconstruct_scalar = np.float64(0).__reduce__()[0]
    allowed = [HistoryBuffer, ConfigDict, (_history_buffer_getattr, 'builtins.getattr'),
               np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed += [(reconstruct_array, f'{module}._reconstruct'),
                    (reconstruct_scalar, f'{module}.scalar')]
    # Each dtype pickles as its concrete class (numpy.dtypes.Float64DType, numpy >= 1.25).
    allowed += [type(np.dtype(kind)) for kind in ('f2', 'f4', 'f8', 'i4', 'i8', 'b1')]
    return allowed


class CheckpointReadError(OSError):
    """A checkpoint that cannot be read: missing, truncated, corrupt, or refused by the safe
    unpickler (a pickle that would run code)."""


class UnsafeCheckpointError(CheckpointReadError, pickle.UnpicklingError):
    """A checkpoint refused by ``weights_only=True``: its pickle asks for code to run."""


def safe_load(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` that also reads mmengine checkpoints.

    Only :func:`mmengine_checkpoint_globals` are allowed besides torch's own
    weights-only set. A file that does not load raises :class:`CheckpointReadError`
    naming ``path`` and why: refused by ``weights_only=True`` (and which global it asked
    for), truncated or corrupt.
    """
    # not the safe_globals() context manager: its exit removes these globals even when
    # they were allowed before (torch 2.14), which would break mmengine's loads later
    allow_mmengine_checkpoint_globals()
    if not osp.isfile(path):
        raise CheckpointReadError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001  any failure of the file, named below
        reason = load_failure(error)
        refused = reason.startswith('it asks for')
        raise (UnsafeCheckpointError if refused else CheckpointReadError)(
            f'cannot read checkpoint {path}: {reason}') from error


def load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line, without torch's advice
    to load with ``weights_only=False`` (which would run the file's code)."""
    code = re.search(r'GLOBAL ([\w.]+)|(getattr\(.*?\)) is not allowed', str(error))
    if code:
        return (f'it asks for {code.group(1) or code.group(2)}, which could run code: refused by '
                "weights_only=True, which loads only tensors, plain data and hgkd_mm's "
                'allow-list of mmengine types')
    first_line = (str(error).strip().splitlines() or [''])[0]
    detail = re.search(r'WeightsUnpickler error:\s*([^\n]+)', str(error))
    if detail:  # a byte stream that is not a pickle: text, random bytes
        first_line = detail.group(1).strip()
    return f'truncated, corrupt or not a torch checkpoint ({type(error).__name__}: {first_line})'


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[IO[bytes]]:
    """Open a binary file that replaces ``path`` only once it is completely written.

    Writes a temporary file in the same folder (``.NAME.*.partial``), fsyncs it, renames
    it over ``path`` and fsyncs the folder: a process killed at any moment, or a disk that
    fills up, leaves the old ``path`` (or none) and at most the temporary file, never a
    partial ``path``. On an error the temporary file is removed.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=PARTIAL_SUFFIX,
                                    dir=folder)
    try:
        with os.fdopen(fd, 'wb') as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it 0600; keep open()'s mode
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_partial_files(folder: str) -> list:
    """Delete what :func:`atomic_write` left when its process was killed mid-write."""
    leftovers = glob.glob(osp.join(folder, f'.*{PARTIAL_SUFFIX}'))
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return leftovers


def last_readable_checkpoint(folder: str, exclude: Optional[str] = None) -> Optional[str]:
    """The newest ``*.pth`` in ``folder`` (by modification time) that :func:`safe_load`
    reads, other than ``exclude``; None if there is none."""
    candidates = sorted(glob.glob(osp.join(folder, '*.pth')), key=osp.getmtime, reverse=True)
    for path in candidates:
        if exclude is not None and osp.abspath(path) == osp.abspath(exclude):
            continue
        try:
            safe_load(path)
        except CheckpointReadError:
            continue
        return path
    return None


def check_resume_checkpoint(work_dir: str, resume_from: Optional[str]) -> Optional[str]:
    """The checkpoint ``--resume`` will load, checked to load completely.

    ``resume_from`` is the file given to ``--resume``; None means the one named by
    ``WORK_DIR/last_checkpoint`` (None is returned when there is no such file: a fresh
    start). A checkpoint that does not load, or a ``last_checkpoint`` that names no
    readable file, raises :class:`CheckpointReadError` naming it and the newest readable
    checkpoint beside it: a bad file is never skipped silently.
    """
    if resume_from is None:
        pointer = osp.join(work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return None
        with open(pointer) as file:
            resume_from = file.read().strip()
        source = f'{pointer} names {resume_from!r}'
        if not resume_from:
            raise CheckpointReadError(
                f'{pointer} is empty; {_readable_hint(work_dir, None)}')
    else:
        source = f'--resume {resume_from}'
    try:
        safe_load(resume_from)
    except CheckpointReadError as error:
        folder = osp.dirname(resume_from) or '.'
        raise CheckpointReadError(f'cannot resume ({source}): {error}. '
                                  f'{_readable_hint(folder, resume_from)}') from error
    return resume_from


def _readable_hint(folder: str, exclude: Optional[str]) -> str:
    readable = last_readable_checkpoint(folder, exclude)
    if readable is None:
        return f'no readable checkpoint in {folder}'
    return f'the last readable checkpoint is {readable}: resume with --resume {readable}'


def allow_mmengine_checkpoint_globals() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's ``weights_only`` allowlist."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
