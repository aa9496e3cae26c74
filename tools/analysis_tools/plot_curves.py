"""Plot the logged scalars of one or more runs, overlaid, from mmengine's scalars.json.

    python tools/analysis_tools/plot_curves.py WORK_DIR_OR_JSON... --keys loss_feat lr
        [--out curves.png] [--x iter|epoch]

Each WORK_DIR_OR_JSON is a run: a work dir (every ``<timestamp>/vis_data/scalars.json``
under it, in order, so a resumed run is one curve) or one ``scalars.json``. One panel per
key, one line per run, against the iteration or the epoch (the mean of the epoch's logged
values; validation metrics at their epoch). A key that no run logged is refused by name.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from matplotlib.backend_bases import FigureCanvasBase

from hgkd_mm.visualization import plot_curves, read_scalars
from hgkd_mm.visualization.curves import X_AXES


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', metavar='WORK_DIR_OR_JSON',
                        help='work dirs or scalars.json files, one per run')
    parser.add_argument('--keys', nargs='+', required=True, help='logged scalars to plot')
    parser.add_argument('--out', default='curves.png', help='the picture (.png, .pdf, .svg)')
    parser.add_argument('--x', choices=X_AXES, default='iter', help='the x axis')
    args = parser.parse_args(argv)
    formats = FigureCanvasBase.get_supported_filetypes()
    if osp.isdir(args.out) or args.out.endswith(os.sep):
        parser.error(f'--out {args.out} is a folder; give the picture file to write')
    if osp.splitext(args.out)[1][1:].lower() not in formats:
        parser.error(f"--out {args.out}: give a file ending in one of .{', .'.join(formats)}")
    for run in args.runs:
        if not osp.exists(run):
            parser.error(f'{run}: no such work dir or scalars.json')
    return args


def run_labels(paths: Sequence[str]) -> list:
    """A work dir's name (a json file's folder above ``vis_data/<timestamp>``); the paths
    as given where names repeat."""
    names = []
    for path in paths:
        path = osp.normpath(path)
        if osp.isfile(path) and osp.basename(osp.dirname(path)) == 'vis_data':
            path = osp.dirname(osp.dirname(osp.dirname(path)))  # <work_dir>/<ts>/vis_data
        names.append(osp.basename(osp.abspath(path)))
    return names if len(set(names)) == len(names) else list(paths)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        runs = {label: read_scalars(path) for label, path in zip(run_labels(args.runs), args.runs)}
        figure = plot_curves(runs, args.keys, args.x)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(error.args[0]) from None
    folder = osp.dirname(osp.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    figure.savefig(args.out)
    print(f"{args.out}: {', '.join(args.keys)} of {len(runs)} run(s) by {args.x}")


if __name__ == '__main__':
    main()
