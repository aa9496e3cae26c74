"""Curves of the scalars mmengine logs to ``vis_data/scalars.json`` (one JSON object a
line: the training scalars with their ``iter`` and ``epoch``, and validation metrics at
``step`` = the epoch, mmengine's default ``log_metric_by_epoch``)."""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

X_AXES = ('iter', 'epoch')


def read_scalars(path: str) -> List[dict]:
    """The records of a ``scalars.json``, or of every ``scalars.json`` under a work dir
    (each run of a resumed training writes its own timestamped folder: they are read in
    name order, so the later run's records come last)."""
    if osp.isdir(path):
        files = sorted(glob.glob(osp.join(path, '**', 'scalars.json'), recursive=True))
        if not files:
            raise FileNotFoundError(f'{path}: no scalars.json under this folder (mmengine '
                                    'writes <work_dir>/<timestamp>/vis_data/scalars.json with '
                                    'its LocalVisBackend)')
    elif osp.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f'{path}: no such work dir or scalars.json')
    records = []
    for file in files:
        with open(file) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f'{file}, line {number}: not JSON ({error})') from None
    return records


def curve(records: Sequence[dict], key: str, x: str) -> Tuple[np.ndarray, np.ndarray]:
    """``key``'s values against ``x``.

    ``x='iter'``: the training records by iteration (a resumed run's later record of an
    iteration replaces the earlier one). ``x='epoch'``: the mean of each epoch's training
    records, or, for a key only validation logs, its value at each epoch.
    """
    train = {}
    for record in records:
        if key in record and 'iter' in record:
            train[record['iter']] = record
    if x == 'iter':
        points = sorted((it, record[key]) for it, record in train.items())
    elif train:
        epochs: Dict[int, List[float]] = {}
        for record in train.values():
            epochs.setdefault(record['epoch'], []).append(record[key])
        points = sorted((epoch, float(np.mean(values))) for epoch, values in epochs.items())
    else:
        points = sorted({record['step']: record[key] for record in records
                         if key in record}.items())
    return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)


def plot_curves(runs: Dict[str, Sequence[dict]], keys: Sequence[str], x: str = 'iter') -> Figure:
    """One panel per key, one line per run (``runs``: label -> records). A key that no run
    logs, or logs only by epoch when ``x='iter'``, is refused by name."""
    if x not in X_AXES:
        raise ValueError(f'x must be one of {X_AXES}, got {x!r}')
    for key in keys:
        logged = [label for label, records in runs.items()
                  if any(key in record for record in records)]
        if not logged:
            available = sorted({k for records in runs.values() for record in records
                                for k in record} - {'step', 'iter', 'epoch'})
            raise KeyError(f'--keys {key}: not in the log of any run (logged: '
                           f"{', '.join(available)})")
        if x == 'iter' and not any(len(curve(runs[label], key, x)[0]) for label in logged):
            raise KeyError(f'--keys {key}: logged only by epoch (a validation metric): use '
                           '--x epoch')
    figure = Figure(figsize=(7, 2.8 * len(keys)), dpi=100, layout='constrained')
    axes = figure.subplots(len(keys), 1, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys):
        for label, records in runs.items():
            xs, ys = curve(records, key, x)
            if len(xs):
                ax.plot(xs, ys, marker='.' if len(xs) < 30 else None, label=label)
        ax.set_ylabel(key)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure
