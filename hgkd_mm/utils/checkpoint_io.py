"""Let ``torch.load(weights_only=True)`` read the checkpoints mmengine writes.

torch >= 2.6 loads with ``weights_only=True`` by default. mmengine 0.10.7 saves its
``message_hub`` in every checkpoint: ``HistoryBuffer`` objects holding numpy arrays
and scalars, whose pickled state also names the buffer's statistics methods through
``getattr(HistoryBuffer, 'mean')``. So ``--resume`` and ``load_checkpoint`` fail on the
unpickler's allowlist. Allowlisting these globals keeps the safe loader;
``weights_only=False`` is never needed.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


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


def safe_load(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` that also reads mmengine checkpoints.

    Only :func:`mmengine_checkpoint_globals` are allowed besides torch's own
    weights-only set; anything else still raises ``UnpicklingError``.
    """
    # not the safe_globals() context manager: its exit removes these globals even when
    # they were allowed before (torch 2.14), which would break mmengine's loads later
    allow_mmengine_checkpoint_globals()
    return torch.load(path, map_location=map_location, weights_only=True)


def allow_mmengine_checkpoint_globals() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's ``weights_only`` allowlist."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
