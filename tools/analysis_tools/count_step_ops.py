"""Count the ATen ops (on a GPU: kernel launches) and the memory traffic of one eager
student step of an H-GKD config, next to a torchvision ResNet of the same depth.

    python tools/analysis_tools/count_step_ops.py CONFIG [--batch-size 2] [--backend B] \
        [--out counts.json]

The step is the student's forward and backward on given teacher tokens, under bf16
autocast (``--no-amp``: float32), on the CPU, with the config's student backend
(``--backend`` another) and the masked norms in torch ops (Triton
kernel launches are not ATen ops; ``dev/triton_norm_check.py`` counts
those). The reference step is a torchvision ResNet's forward and backward on the same
images. Views are not counted. Per-channel ops are those whose largest tensor has at most
4,096 values. Bytes are those read and written by the ops other than convolutions and
matrix products, per image: the difference between a step at ``2 * batch`` and one at
``batch``, divided by ``batch``, so per-step constants (weight casts) drop out. It counts;
it does not time.
"""
import argparse
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torchvision
from mmengine.logging import MMLogger

from hgkd_mm.benchmark import (build_model, count_ops, crop_size, hgkd_config, hgkd_model_cfg,
                               total_loss)
from hgkd_mm.models.backbones.sparse_resnet import BACKENDS
from hgkd_mm.utils.cli import dump_json, image_size, json_path, positive_int


def hgkd_step(model: nn.Module, inputs: torch.Tensor, amp: bool) -> Callable[[], None]:
    mask = model.mask(inputs)
    model.loss(inputs)  # the first step chooses the (eager) student step
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp), torch.no_grad():
        tokens = [t.clone() for t in model.teacher(inputs, mask)]

    def run() -> None:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            loss = total_loss(model.compiled_step.compiled_part(inputs, mask,
                                                                teacher_output=tokens))
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def resnet_step(model: nn.Module, inputs: torch.Tensor, amp: bool) -> Callable[[], None]:

    def run() -> None:
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
            loss = model(inputs).float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def summarise(name: str, build_step, batch: int, img_size: int) -> dict:
    records = [count_ops(build_step(torch.randn(b, 3, img_size, img_size)))
               for b in (batch, 2 * batch)]
    small, large = records
    return dict(name=name, ops=sum(small.ops.values()), per_channel_ops=small.per_channel,
                bytes_per_image=(large.bytes - small.bytes) / batch,
                top_ops=small.ops.most_common(12))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='H-GKD pretraining config')
    parser.add_argument('--batch-size', type=positive_int, default=2)
    parser.add_argument('--img-size', type=image_size, help="default: the config's crop size")
    parser.add_argument('--backend', choices=BACKENDS, help="student backend (default: the "
                        "config's)")
    parser.add_argument('--amp', action=argparse.BooleanOptionalAction, default=True,
                        help='bf16 autocast (default on)')
    parser.add_argument('--out', type=json_path, help='write the counts as JSON here')
    args = parser.parse_args(argv)
    cfg = hgkd_config(args.config)
    img_size = args.img_size or crop_size(cfg)
    if img_size % 32:  # --img-size is checked by its type: this is the config's crop size
        parser.error(f"the config's crop size {img_size} is not a multiple of 32 (the student "
                     'stride): give --img-size')
    import hgkd_mm  # noqa: F401  registers the H-GKD modules
    MMLogger.get_instance(f'count_step_ops_{id(args)}', log_level='WARNING')
    options = argparse.Namespace(backend=args.backend, teacher_input_mode=None, channels_last=None,
                                 norm_impl='torch', compile_teacher=None)
    torch.manual_seed(0)
    model = build_model(dict(hgkd_model_cfg(cfg, options), compile=False),
                              torch.device('cpu'))
    depth, backend = model.backbone.depth, model.backbone.backend
    norms = 'masked norms in torch ops' if backend != 'packed' else 'BatchNorm2d on the tiles'
    resnet = getattr(torchvision.models, f'resnet{depth}')().train()
    resnet.avgpool, resnet.fc = nn.Identity(), nn.Identity()  # the student has no head
    rows = [
        summarise(f'H-GKD student ({backend} backend, {norms})',
                  lambda x: hgkd_step(model, x, args.amp), args.batch_size, img_size),
        summarise(f'torchvision resnet{depth}', lambda x: resnet_step(resnet, x, args.amp),
                  args.batch_size, img_size)]
    result = dict(config=args.config, batch_size=args.batch_size, img_size=img_size,
                  amp='bf16' if args.amp else 'fp32', rows=rows)
    print(f'batch {args.batch_size} | {img_size} px | {result["amp"]} | eager, CPU')
    print(f'{"step":<58} {"ops":>7} {"per-channel":>12} {"MiB/img":>9}')
    for row in rows:
        print(f'{row["name"]:<58} {row["ops"]:>7} {row["per_channel_ops"]:>12} '
              f'{row["bytes_per_image"] / 2**20:>9.1f}')
    if args.out:
        dump_json(args.out, result)
    return result


if __name__ == '__main__':
    main()
