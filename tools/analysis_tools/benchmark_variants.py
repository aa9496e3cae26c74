"""H-GKD training-step variants side by side in one process, alternated step by step.

    python tools/analysis_tools/benchmark_variants.py [ITERS] [--variants a,b] [--out JSON]

Paper config (``configs/pretrain/hgkd_r50.py``), batch 8, 224 px, float32, CPU, one
thread, the config's optimizer and clipping; prints the process CPU time per step of each
variant and its speed relative to the shipped default (backend ``packed`` since session
9). ``masked`` is the earlier default backend; ``masked_every_conv`` restores its earlier
behaviour of multiplying every convolution's output by the mask. The ratio to
mmpretrain's SparK + teacher comes from ``benchmark_pretrain.py --compare-spark``.
"""
import argparse
import copy
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import torch  # noqa: E402
import benchmark_pretrain as bp  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

import hgkd_mm  # noqa: F401,E402
from hgkd_mm.utils.cli import dump_json, json_path, positive_int  # noqa: E402

MMLogger.get_instance('ab', log_level='WARNING')
torch.set_num_threads(1)
dev = torch.device('cpu')
cfg = Config.fromfile(osp.join(ROOT, 'configs', 'pretrain', 'hgkd_r50.py'))
bench = bp.Bench(dev, torch.randn(8, 3, 224, 224), False, cfg.optim_wrapper.optimizer.to_dict(),
                 cfg.optim_wrapper.paramwise_cfg.to_dict(), cfg.optim_wrapper.clip_grad.to_dict())
base_cfg = bp.hgkd_model_cfg(cfg, bp.parse_args(['x']))


def with_(**changes):
    model = copy.deepcopy(base_cfg)
    for key, value in changes.items():
        node = model
        *parents, leaf = key.split('__')
        for p in parents:
            node = node[p]
        node[leaf] = value
    return model


def mask_every_conv(model):
    """The previous behaviour: every conv output multiplied by the mask."""
    original = model.backbone.sparse_conv
    model.backbone.sparse_conv = lambda conv, x, masks, masked_norm_next=False: original(
        conv, x, masks)
    return model


variants = {
    'default': (base_cfg, None),
    'decoder_512': (with_(neck__channels=512), None),
    'channels_last': (with_(channels_last=True), None),
    'masked': (with_(backbone__backend='masked'), None),
    'masked_every_conv': (with_(backbone__backend='masked'), mask_every_conv),
    'spconv': (with_(backbone__backend='spconv'), None),
    'teacher_masked': (with_(teacher__input_mode='masked'), None),
}
parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('iters', nargs='?', type=positive_int, default=5, help='timed steps each')
parser.add_argument('--variants', default=','.join(variants),
                    help=f'comma-separated, from {",".join(variants)} (default: all; '
                    'default is always run, as the reference)')
parser.add_argument('--out', type=json_path, help='write the summaries as JSON here')
args = parser.parse_args()
chosen = ['default'] + [v for v in args.variants.split(',') if v and v != 'default']
unknown = [v for v in chosen if v not in variants]
if unknown:
    parser.error(f'--variants: unknown {unknown}; known: {", ".join(variants)}')
steps = {}
for name in chosen:
    model_cfg, patch = variants[name]
    torch.manual_seed(0)
    model = bp.build_model(model_cfg, dev)
    if patch:
        model = patch(model)
    steps[name], _ = bench.step(name, model, (lambda m: lambda: m.loss(bench.inputs))(model))
    steps[name].run()
for i in range(args.iters):
    for name in (list(steps) if i % 2 == 0 else list(reversed(steps))):
        steps[name].timed(dev)
res = {k: s.summary(8, dev) for k, s in steps.items()}
base = res['default']['cpu_ms_median']
for k, v in res.items():
    print(f"{k:16s} CPU s/step median {v['cpu_ms_median'] / 1e3:6.2f} (min {v['cpu_ms_min'] / 1e3:6.2f})"
          f"  speed vs default {base / v['cpu_ms_median']:.2f}x")
if args.out:
    dump_json(args.out, res)
