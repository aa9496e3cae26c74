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
    """The globals, other than tensors, that mmengine 0.10.7 pickles into a checkpoint.

    Found by loading Runner checkpoints with ``weights_only=True`` until they load:
    ``HistoryBuffer``s of float64/int64 numpy arrays and numpy scalars in the
    ``message_hub`` (mmpretrain/mmdet metrics log python floats, mmseg's float64).
    """
    # What numpy pickles with (numpy.core.multiarray in numpy 1, numpy._core in numpy 2).
    reconstruct_array = np.zeros(0).__reduce__()[0]
    reconstruct_scalar = np.float64(0).__reduce__()[0]
    # Each dtype pickles as its concrete class (numpy.dtypes.Float64DType, numpy >= 1.25).
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.int64)]
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
            reconstruct_array, reconstruct_scalar, np.ndarray, np.dtype, *dtype_classes]


def allow_mmengine_checkpoint_globals() -> None:
    """Add :func:`mmengine_checkpoint_globals` to torch's ``weights_only`` allowlist."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
