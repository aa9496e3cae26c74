"""Held-out feature loss of an H-GKD student, next to an untrained student and a
predict-the-mean-token baseline.

    python tools/analysis_tools/eval_feature_loss.py CONFIG CHECKPOINT [--out result.json]

The held-out images come from the config's ``heldout_dataloader``; the mean token is the
mean normalised teacher token over ``train_dataloader``'s images seen through the
held-out (deterministic) pipeline. Every model sees the same masks (seeded).
"""
import argparse
import copy

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint

from hgkd_mm.utils import allow_mmengine_checkpoint_globals
from hgkd_mm.utils.cli import dump_json, json_path


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', type=json_path, help='write the numbers as JSON here')
    parser.add_argument('--seed', type=int, default=0, help='seed of the masks')
    return parser.parse_args()


def build_loader(cfg, ann_file=None):
    loader_cfg = copy.deepcopy(cfg.heldout_dataloader)
    if ann_file is not None:
        loader_cfg.dataset.ann_file = ann_file
    loader_cfg.persistent_workers = False
    return Runner.build_dataloader(loader_cfg)


@torch.no_grad()
def mean_target_token(model, loader) -> torch.Tensor:
    """Mean normalised teacher token ``(1, D, 1, 1)`` over ``loader``'s images (masked as in
    training, which the teacher's ``input_mode='masked'`` needs and ``'full'`` ignores)."""
    total, count = 0, 0
    for data in loader:
        inputs = model.data_preprocessor(data)['inputs']
        target = model.head.target(model.teacher(inputs, model.mask(inputs)))
        total = total + target.sum((0, 2, 3))
        count += target.shape[0] * target.shape[2] * target.shape[3]
    return (total / count).view(1, -1, 1, 1)


@torch.no_grad()
def heldout_losses(students: dict, mean_token: torch.Tensor, loader, seed: int) -> dict:
    """Mean feature loss on masked positions for each student and the mean token."""
    reference = next(iter(students.values()))
    sums = {name: 0.0 for name in [*students, 'mean token']}
    weight_total = 0.0
    torch.manual_seed(seed)
    for data in loader:
        inputs = reference.data_preprocessor(data)['inputs']
        mask = reference.mask(inputs)
        target = reference.head.target(reference.teacher(inputs, mask))
        visible = torch.nn.functional.interpolate(mask[:, None].float(), size=target.shape[-2:])
        weights = reference.head.position_weights(visible)
        predictions = {name: model.head.proj(model.neck(model.extract_feat(inputs, mask), mask))
                       for name, model in students.items()}
        predictions['mean token'] = mean_token.expand_as(target)
        for name, pred in predictions.items():
            sums[name] += (reference.head.feature_loss(pred.float(), target) * weights).sum().item()
        weight_total += weights.sum().item()
    return {name: value / weight_total for name, value in sums.items()}


def main():
    args = parse_args()
    allow_mmengine_checkpoint_globals()
    cfg = Config.fromfile(args.config)
    if not isinstance(cfg.get('heldout_dataloader'), dict):
        raise SystemExit(f'{args.config} has no `heldout_dataloader`: this tool evaluates the '
                         'held-out images it names (see the demo config '
                         'configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-'
                         '128px.py)')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    import hgkd_mm  # noqa: F401  registers the modules
    from mmpretrain.registry import MODELS

    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    trained = MODELS.build(cfg.model)
    load_checkpoint(trained, args.checkpoint, map_location='cpu', strict=True)
    torch.manual_seed(args.seed)
    untrained = MODELS.build(cfg.model)
    untrained.init_weights()
    trained.eval(), untrained.eval()

    mean_token = mean_target_token(
        trained, build_loader(cfg, cfg.train_dataloader.dataset.get('ann_file', '')))
    losses = heldout_losses({'trained student': trained, 'untrained student': untrained},
                            mean_token, build_loader(cfg), args.seed)
    print('\nHeld-out feature loss (loss_feat on masked positions, lower is better)')
    for name, value in losses.items():
        print(f'  {name:<18} {value:.4f}')
    if args.out:
        dump_json(args.out, dict(config=args.config, checkpoint=args.checkpoint,
                                 seed=args.seed, heldout_loss=losses), indent=2)


if __name__ == '__main__':
    main()
