"""Linear probe or short fine-tune of a pretrained backbone on labelled images.

    python tools/analysis_tools/probe.py CHECKPOINT --data DIR_OR_ANN [--linear | --finetune]
        [--arch resnet18 | resnet50 | vit:<config.py | arch JSON | arch name>]
        [--img-size 128] [--test-dir DIR_OR_ANN] [--data-root DIR] [--split 0.2]
        [--seeds 0 1] [--epochs N] [--cache-dir DIR] [--out results.json]

``CHECKPOINT`` is any file whose state dict holds the backbone: an H-GKD or SparK
pre-training checkpoint or a converted dense one (``backbone.<ResNet keys>``), a
torchvision/timm ResNet state dict, an mmpretrain/timm/official MAE ViT checkpoint
(``--arch vit:...``), or ``random`` for a randomly initialised backbone.
Missing or unexpected backbone keys are an error.

``--data`` is an image folder (one folder per class) or an ann file (``<path> <label>``
lines relative to ``--data-root``, e.g. ``configs/splits/caltech101_train.txt`` with
``--data-root ../shared/data``). Without ``--test-dir``, each seed makes its own
stratified split (``--split`` of every class held out); with it, ``--test-dir`` is the
held-out set for every seed. The method (features, linear probe, fine-tune) is described
in :mod:`hgkd_mm.evaluation.probe`. Each seed's top-1 (%) and their mean and sample std
are printed as a table and written to ``--out`` as JSON.
"""
from __future__ import annotations

import argparse
import os.path as osp
from typing import Optional, Sequence

import torch

from hgkd_mm.evaluation.probe import evaluate, format_table
from hgkd_mm.utils.cli import dump_json, json_path, open_fraction, positive_int


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help="backbone checkpoint, or 'random'")
    parser.add_argument('--data', required=True,
                        help='image folder (one folder per class) or ann file (.txt)')
    parser.add_argument('--data-root', help='folder the ann files\' paths are relative to')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--linear', dest='mode', action='store_const', const='linear',
                      help='linear probe on frozen features (default)')
    mode.add_argument('--finetune', dest='mode', action='store_const', const='finetune',
                      help='short end-to-end fine-tune')
    parser.set_defaults(mode='linear')
    parser.add_argument('--arch', default='resnet18',
                        help='resnet18, resnet50, ... or vit:<config.py | JSON | arch name>')
    parser.add_argument('--img-size', type=positive_int, default=128)
    parser.add_argument('--test-dir', help='held-out image folder (same classes) or ann file')
    parser.add_argument('--split', type=open_fraction, default=0.2,
                        help='held-out fraction of every class (without --test-dir)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--epochs', type=positive_int, default=5, help='fine-tune epochs')
    parser.add_argument('--lr', type=float, default=1e-3, help='fine-tune AdamW lr')
    parser.add_argument('--batch-size', type=positive_int, default=64)
    parser.add_argument('--cache-dir', help='cache decoded images and features here')
    parser.add_argument('--device', help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--out', type=json_path, help='write the results as JSON here')
    args = parser.parse_args(argv)
    if args.lr <= 0:
        parser.error(f'--lr must be positive, got {args.lr}')
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            parser.error(f'--device must be cpu, cuda or cuda:N, got {args.device!r}')
        if device.type not in ('cpu', 'cuda'):
            parser.error(f'--device must be cpu, cuda or cuda:N, got {args.device!r}')
        if device.type == 'cuda' and not torch.cuda.is_available():
            parser.error(f'--device {args.device}: this torch sees no CUDA device')
    for option, folder in (('--data', args.data), ('--test-dir', args.test_dir)):
        if folder is not None and not (osp.isfile(folder) if folder.endswith('.txt')
                                       else osp.isdir(folder)):
            parser.error(f'{option}: no folder or ann file {folder}')
    if args.checkpoint != 'random' and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint: no file {args.checkpoint} (or give random)')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    result = evaluate(args.checkpoint, args.data, args.arch, args.img_size, args.mode,
                      args.test_dir, args.split, args.seeds, args.epochs, args.lr,
                      args.cache_dir, args.batch_size, args.device, args.data_root)
    print(format_table([result]))
    if args.out:
        dump_json(args.out, result, indent=2)
    return result


if __name__ == '__main__':
    main()
