"""The offline demo (`make demo`): MAE teacher -> H-GKD student -> held-out check.

1. mmpretrain's own MAE pretrains a small ViT on 900 images of ../shared/data/imagenet-sample;
2. H-GKD distils it into a sparse ResNet-18;
3. the held-out feature loss of the trained student on the 100 other images, next to the
   untrained student's and a predict-the-mean-token baseline's.
Checkpoints go to work_dirs/demo/; a re-run resumes (finished stages are skipped).
"""
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, '..', 'shared', 'data', 'imagenet-sample')
WORK = os.path.join(ROOT, 'work_dirs', 'demo')
MAE_CFG = 'configs/pretrain/mae_vit-tiny-p16_1xb64-15e_imagenet-sample-128px.py'
HGKD_CFG = 'configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py'
HELDOUT_EVERY = 10


def write_split() -> None:
    """Every 10th image (sorted by path) is held out; the rest is the training pool."""
    images = sorted(os.path.relpath(p, DATA) for p in glob.glob(os.path.join(DATA, '*', '*')))
    if not images:
        sys.exit(f'no images found under {os.path.normpath(DATA)}: the demo needs the shared data')
    os.makedirs(WORK, exist_ok=True)
    split = {'train.txt': [p for i, p in enumerate(images) if i % HELDOUT_EVERY],
             'heldout.txt': images[::HELDOUT_EVERY]}
    for name, paths in split.items():
        with open(os.path.join(WORK, name), 'w') as f:
            f.write('\n'.join(paths) + '\n')
    print(f"[demo] {len(split['train.txt'])} training images, "
          f"{len(split['heldout.txt'])} held out")


def run(*args: str) -> None:
    print('[demo] $ python ' + ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def main() -> None:
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    write_split()
    run('tools/train.py', MAE_CFG, '--work-dir', 'work_dirs/demo/mae', '--resume')
    run('tools/train.py', HGKD_CFG, '--work-dir', 'work_dirs/demo/hgkd', '--resume')
    run('tools/analysis_tools/eval_feature_loss.py', HGKD_CFG, 'work_dirs/demo/hgkd/epoch_6.pth',
        '--out', 'work_dirs/demo/heldout_feature_loss.json')


if __name__ == '__main__':
    main()
