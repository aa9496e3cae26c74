"""Pictures of what an H-GKD student predicts next to its teacher's target.

    python tools/analysis_tools/visualize_distill.py CONFIG CKPT IMAGE_OR_DIR... --out-dir DIR
        [--mask-seed N] [--img-size N] [--batch-size N] [--device cpu|cuda] [--cfg-options K=V]

For each image, ``DIR/<file name>.png``: one row of five panels, the input, the masked input
the student saw, the teacher's target and the student's prediction at the teacher's grid as
RGB (the first three principal components of the target tokens of all the images of the
call; the prediction through the same projection and scale, so the colours compare), and
their per-position cosine distance with the masked cells outlined. ``DIR/losses.json``: each
image's mean feature loss (the config's head loss) on masked and on visible positions.

``CKPT`` is an H-GKD checkpoint of the config's student, or ``random`` for the untrained
student. The masks (and the untrained student) come from ``--mask-seed``: the same seed
draws the same pictures. The images are resized (short edge) and centre-cropped to
``--img-size``, by default the teacher's ``img_size``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from PIL import Image

from hgkd_mm.models.algorithms import HGKD
from hgkd_mm.utils import merge_cfg_options
from hgkd_mm.utils.cli import dump_json, image_size, positive_int
from hgkd_mm.visualization import (distill_pictures, evaluating, image_paths, load_images,
                                   load_student_checkpoint, picture_names, seeded_mask)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the H-GKD config of the student')
    parser.add_argument('checkpoint', help="the student's checkpoint, or random")
    parser.add_argument('images', nargs='+', metavar='IMAGE_OR_DIR',
                        help='image files, or folders of images')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs and losses.json')
    parser.add_argument('--mask-seed', type=int, default=0,
                        help='seed of the masks (and of the untrained student with random)')
    parser.add_argument('--img-size', type=image_size,
                        help="input side, a multiple of 32 (default: the teacher's img_size)")
    parser.add_argument('--batch-size', type=positive_int, default=16,
                        help='images per forward pass')
    parser.add_argument('--device', help='cpu, cuda or cuda:N (default: cuda when available)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config: no file {args.config}')
    if args.checkpoint != 'random' and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint: no file {args.checkpoint} (or give random)')
    try:
        args.paths = image_paths(args.images)
    except FileNotFoundError as error:
        parser.error(str(error))
    if osp.exists(args.out_dir) and not osp.isdir(args.out_dir):
        parser.error(f'--out-dir {args.out_dir} is a file; give a folder')
    args.device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    return args


def build_model(args: argparse.Namespace) -> HGKD:
    """The config's H-GKD model with the checkpoint's student (or an untrained one)."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options(cfg, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import MODELS
    if cfg.get('data_preprocessor') is not None:  # as the Runner: the model's if it has none
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    torch.manual_seed(args.mask_seed)
    model = MODELS.build(cfg.model)
    if not isinstance(model, HGKD):
        raise SystemExit(f'{args.config} builds a {type(model).__name__}, not an HGKD model')
    if args.checkpoint == 'random':
        model.init_weights()
    else:
        try:
            load_student_checkpoint(model, args.checkpoint)
        except ValueError as error:
            raise SystemExit(str(error)) from None
    return model.to(args.device)


def main(argv: Optional[Sequence[str]] = None) -> list:
    args = parse_args(argv)
    model = build_model(args)
    size = args.img_size or model.teacher.img_size
    images = load_images(args.paths, size)
    mask = seeded_mask(model, len(images), size, args.mask_seed)
    names = picture_names(args.paths)
    with evaluating(model):
        pictures, losses = distill_pictures(model, images, mask, names, args.batch_size)
    os.makedirs(args.out_dir, exist_ok=True)
    records = []
    for path, name, picture, loss in zip(args.paths, names, pictures, losses):
        Image.fromarray(picture).save(osp.join(args.out_dir, name + '.png'))
        records.append(dict(image=path, picture=name + '.png', **loss))
        print(f"{name + '.png':<32} loss: masked {loss['loss_masked']:.4f}, "
              f"visible {loss['loss_visible']:.4f}")
    dump_json(osp.join(args.out_dir, 'losses.json'),
              dict(config=args.config, checkpoint=args.checkpoint, mask_seed=args.mask_seed,
                   img_size=size, loss=model.head.loss_type, images=records), indent=2)
    return records


if __name__ == '__main__':
    main()
