"""LightlyTrain's ``distillation`` with the project's MAE ViT teacher: an anchor for the
pretraining comparison.

lightly-train (AGPL-3.0) is not a dependency of hgkd_mm. Installing it into .venv would
upgrade numpy to 2 there (hgkd_mm pins numpy<2), so it lives in a venv of its own::

    python3.11 -m venv /work/lt_venv && /work/lt_venv/bin/pip install lightly-train timm

The teacher checkpoints are mmengine files that only .venv can read, so a run has two steps:

1. ``.venv/bin/python dev/lightly_train_anchor.py export-teacher CKPT TEACHER.pth``:
   hgkd_mm's own teacher loader reads the encoder (any format ``FrozenViTTeacher`` takes);
   it is written as plain tensors with timm names, with the timm ViT arguments.
2. ``/work/lt_venv/bin/python dev/lightly_train_anchor.py train --teacher TEACHER.pth
   --ann-file configs/splits/pool.txt --data-root ../shared/data --steps N --batch-size B
   --work-dir DIR --student-out STUDENT.pth``: ``lightly_train.pretrain(method=
   'distillation')`` with that teacher and a torchvision ResNet-18 student, for exactly N
   optimizer steps of B images at --img-size px (96). The student is saved as a torchvision ResNet-18
   state dict (what tools/analysis_tools/probe.py reads).

The teacher is a timm ``VisionTransformer`` handed to lightly-train as
``method_args['teacher']`` (its type allows an ``nn.Module``). lightly-train wraps timm
models itself: the local target is the patch tokens after the final norm (as
``FrozenViTTeacher(input_mode='full')``), the global target their mean (as the teacher's
linear probe). No lightly-train code is replaced. The augmentations, loss, optimizer and
learning-rate schedule are lightly-train's defaults; only the image size, the step count
and the batch size are set here.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import os.path as osp
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

StateDict = Dict[str, Tensor]


def mmpretrain_to_timm(encoder_state: StateDict, vit: torch.nn.Module) -> StateDict:
    """mmpretrain ``VisionTransformer`` names -> the names of ``vit`` (a timm ViT).

    The inverse of hgkd_mm's ``convert_timm_vit`` (the teacher's own timm reader), applied
    to each of ``vit``'s keys, so the two cannot disagree.

    Raises:
        ValueError: for encoder keys that no timm key maps to.
    """
    from hgkd_mm.models.teachers import convert_timm_vit
    timm_names = {mm_key: timm_key for timm_key, value in vit.state_dict().items()
                  for mm_key in convert_timm_vit({timm_key: value})}
    unknown = sorted(encoder_state.keys() - timm_names.keys())
    if unknown:
        raise ValueError(f'teacher encoder keys with no timm ViT counterpart: {unknown[:10]}')
    return {timm_names[key]: value for key, value in encoder_state.items()}


def timm_vit_kwargs(encoder_state: StateDict, num_heads: int) -> dict:
    """timm ``VisionTransformer`` arguments read from an mmpretrain encoder's tensors.

    The head count is not stored in the tensors, so it is an argument.
    """
    try:
        embed_dim, _, patch_size, _ = encoder_state['patch_embed.projection.weight'].shape
        num_tokens = encoder_state['pos_embed'].shape[1]
        hidden_dim = encoder_state['layers.0.ffn.layers.0.0.weight'].shape[0]
    except KeyError as error:
        raise ValueError(f'not a ViT encoder with a cls token: it lacks {error}') from None
    if embed_dim % num_heads:
        raise ValueError(f'--num-heads {num_heads} does not divide the width {embed_dim}')
    grid = math.isqrt(num_tokens - 1)
    if grid * grid != num_tokens - 1:
        raise ValueError(f'pos_embed has {num_tokens} tokens: not a cls token plus a square grid')
    depth = len({k.split('.')[1] for k in encoder_state if k.startswith('layers.')})
    return dict(img_size=grid * patch_size, patch_size=patch_size, embed_dim=embed_dim,
                depth=depth, num_heads=num_heads, mlp_ratio=hidden_dim / embed_dim,
                qkv_bias='layers.0.attn.qkv.bias' in encoder_state,
                init_values=1.0 if 'layers.0.attn.gamma1.weight' in encoder_state else None)


def build_timm_teacher(vit_kwargs: dict, state_dict: Optional[StateDict]) -> torch.nn.Module:
    """A frozen timm ``VisionTransformer`` (no classifier); ``state_dict`` loaded strictly,
    or random weights when it is None."""
    from timm.models.vision_transformer import VisionTransformer
    # lightly-train pools the patch tokens itself; 'token' adds no fc_norm weights
    vit = VisionTransformer(num_classes=0, global_pool='token', class_token=True, **vit_kwargs)
    if state_dict is not None:
        vit.load_state_dict(state_dict, strict=True)
    return vit.eval().requires_grad_(False)


def read_ann_file(ann_file: str, data_root: str) -> List[str]:
    """Absolute image paths from an mmpretrain ann file.

    One path per line, relative to ``data_root``; a trailing integer label (the labelled
    format) is dropped. Every image must exist.
    """
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'--ann-file: no file {ann_file}')
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'--data-root: no folder {data_root}')
    paths, missing = [], []
    with open(ann_file, encoding='utf-8') as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(' ', 1)
            relative = parts[0] if len(parts) == 2 and parts[1].isdigit() else line
            path = osp.abspath(osp.join(data_root, relative))
            if osp.isfile(path):
                paths.append(path)
            else:
                missing.append(f'line {number}: {path}')
    if missing:
        raise FileNotFoundError(f'--ann-file {ann_file}: {len(missing)} images not found under '
                                f'--data-root {data_root}, e.g. ' + '; '.join(missing[:3]))
    if not paths:
        raise ValueError(f'--ann-file {ann_file} lists no images')
    return paths


def export_teacher(checkpoint: str, out: str, num_heads: int,
                   img_size: Optional[int] = None) -> None:
    """Write the teacher encoder of ``checkpoint`` for ``train`` (run in .venv).

    With an ``img_size`` other than the checkpoint's, ``pos_embed`` is resized by
    mmpretrain's ``resize_pos_embed``, as ``FrozenViTTeacher`` does at that input size
    (timm's own resampling is antialiased bicubic: other numbers).
    """
    from hgkd_mm.models.teachers import load_teacher_checkpoint
    from mmpretrain.models.utils import resize_pos_embed
    encoder_state, _ = load_teacher_checkpoint(checkpoint)  # the decoder is not used
    vit_kwargs = timm_vit_kwargs(encoder_state, num_heads)
    patch_size, trained_size = vit_kwargs['patch_size'], vit_kwargs['img_size']
    if img_size is not None and img_size != trained_size:
        if img_size % patch_size:
            raise ValueError(f'--img-size {img_size} is not a multiple of the patch size '
                             f'{patch_size}')
        encoder_state['pos_embed'] = resize_pos_embed(
            encoder_state['pos_embed'], (trained_size // patch_size, ) * 2,
            (img_size // patch_size, ) * 2, mode='bicubic', num_extra_tokens=1)
        vit_kwargs['img_size'] = img_size
    state_dict = mmpretrain_to_timm(encoder_state, build_timm_teacher(vit_kwargs, None))
    build_timm_teacher(vit_kwargs, state_dict)  # a strict load: fails here, not in train
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save(dict(timm_vit_kwargs=vit_kwargs, state_dict=state_dict), out)
    print(f'teacher {checkpoint} -> {out}: timm VisionTransformer{vit_kwargs}')


def load_exported_teacher(path: str) -> torch.nn.Module:
    """The frozen timm teacher from an ``export-teacher`` file (no mm package needed)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'--teacher: no file {path} (write it with export-teacher)')
    exported = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(exported, dict) or set(exported) != {'timm_vit_kwargs', 'state_dict'}:
        raise ValueError(f'--teacher {path}: not a file written by export-teacher')
    return build_timm_teacher(exported['timm_vit_kwargs'], exported['state_dict'])


def train(args: argparse.Namespace) -> None:
    """LightlyTrain distillation for exactly ``args.steps`` steps (run in its venv)."""
    # no usage statistics sent home, no hub look-ups: the runs are offline
    os.environ.setdefault('LIGHTLY_TRAIN_EVENTS_DISABLED', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import lightly_train
    import torchvision

    images = read_ann_file(args.ann_file, args.data_root)
    batches_per_epoch = len(images) // args.batch_size  # lightly-train drops the last batch
    if batches_per_epoch == 0:
        raise ValueError(f'--batch-size {args.batch_size} is larger than the '
                         f'{len(images)} images of --ann-file')
    if args.teacher == 'random':
        torch.manual_seed(args.seed)
        teacher = build_timm_teacher(dict(img_size=args.img_size, patch_size=16, embed_dim=192,
                                          depth=6, num_heads=3, mlp_ratio=4.0), None)
    else:
        teacher = load_exported_teacher(args.teacher)
        if teacher.patch_embed.img_size != (args.img_size, args.img_size):
            raise ValueError(f'--img-size {args.img_size}: --teacher {args.teacher} was exported '
                             f'for {teacher.patch_embed.img_size[0]} px (export-teacher '
                             f'--img-size {args.img_size})')
    optim_args = None if args.lr is None else dict(lr=args.lr)
    lightly_train.pretrain(
        out=args.work_dir,
        data=images,
        model='torchvision/resnet18',  # torchvision's random init (no weights downloaded)
        method='distillation',
        method_args=dict(teacher=teacher),
        epochs=math.ceil(args.steps / batches_per_epoch),
        batch_size=args.batch_size,
        num_workers='auto' if args.num_workers is None else args.num_workers,
        seed=args.seed,
        precision=args.precision,
        optim_args=optim_args,
        transform_args=dict(image_size=(args.img_size, args.img_size)),
        # max_steps cuts the last epoch; the cosine schedule spans exactly these steps
        trainer_args=dict(max_steps=args.steps, log_every_n_steps=args.log_interval),
        resume_interrupted=args.resume,
        overwrite=args.overwrite,
    )
    exported = osp.join(args.work_dir, 'exported_models', 'exported_last.pt')
    student = torchvision.models.resnet18()
    student.load_state_dict(torch.load(exported, map_location='cpu', weights_only=True))
    os.makedirs(osp.dirname(osp.abspath(args.student_out)), exist_ok=True)
    partial = args.student_out + '.partial'
    torch.save(student.state_dict(), partial)
    os.replace(partial, args.student_out)
    print(f'student (torchvision resnet18 state dict) -> {args.student_out}')
    step_time = median_step_time(osp.join(args.work_dir, 'metrics.jsonl'))
    if step_time is not None:
        print(f'median step time {step_time:.3f} s (lightly-train profiling/batch_time, '
              'logged steps after the first)')


def median_step_time(metrics_file: str) -> Optional[float]:
    """The median of lightly-train's logged ``profiling/batch_time`` (data loading excluded),
    without step 0 (warm-up); None when no later step was logged."""
    if not osp.isfile(metrics_file):
        return None
    with open(metrics_file, encoding='utf-8') as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    times = [row['profiling/batch_time'] for row in rows
             if 'profiling/batch_time' in row and row.get('step', 0) > 0]
    return statistics.median(times) if times else None


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    export = commands.add_parser('export-teacher', help='in .venv: teacher -> timm tensors')
    export.add_argument('checkpoint', help='MAE / mmpretrain / timm ViT checkpoint')
    export.add_argument('out', help='file for train --teacher')
    export.add_argument('--num-heads', type=positive_int, default=3,
                        help='attention heads (not stored in checkpoints; 3 for the demo ViT)')
    export.add_argument('--img-size', type=positive_int,
                        help="train's --img-size, if not the checkpoint's (pos_embed resized)")
    run = commands.add_parser('train', help='in the lightly-train venv: distil a ResNet-18')
    run.add_argument('--teacher', required=True, help="export-teacher's file, or 'random'")
    run.add_argument('--ann-file', required=True, help='image paths, one per line')
    run.add_argument('--data-root', required=True, help="the ann file's paths are under it")
    run.add_argument('--steps', type=positive_int, required=True, help='optimizer steps')
    run.add_argument('--batch-size', type=positive_int, default=32)
    run.add_argument('--img-size', type=positive_int, default=96)
    run.add_argument('--work-dir', required=True, help="lightly-train's output folder")
    run.add_argument('--student-out', required=True, help='torchvision ResNet-18 state dict')
    run.add_argument('--seed', type=int, default=0)
    run.add_argument('--lr', type=float, help="AdamW lr before lightly-train's batch scaling "
                     '(default: its own, 5e-4 at batch 1536, sqrt-scaled)')
    run.add_argument('--num-workers', type=int, help='data workers (default: lightly-train)')
    run.add_argument('--precision', default='auto', help="e.g. 32-true, bf16-mixed")
    run.add_argument('--log-interval', type=positive_int, default=10, help='steps per log line')
    run.add_argument('--resume', action='store_true', help='resume an interrupted run')
    run.add_argument('--overwrite', action='store_true', help='reuse a non-empty --work-dir')
    args = parser.parse_args(argv)
    if args.command == 'train':
        if args.lr is not None and args.lr <= 0:
            parser.error(f'--lr must be positive, got {args.lr}')
        if args.num_workers is not None and args.num_workers < 0:
            parser.error(f'--num-workers must be >= 0, got {args.num_workers}')
        if args.img_size % 16:
            parser.error(f'--img-size must be a multiple of the patch size 16, got '
                         f'{args.img_size}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.command == 'export-teacher':
        export_teacher(args.checkpoint, args.out, args.num_heads, args.img_size)
    else:
        train(args)


if __name__ == '__main__':
    sys.exit(main())
