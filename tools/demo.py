"""The offline demo (`make demo`): shipped MAE teacher -> H-GKD student -> held-out probe.

1. H-GKD distils the shipped MAE ViT teacher (checkpoints/mae_vit-tiny-p16_pool-96px.pth)
   into a sparse ResNet-18 on the unlabeled pool (imagenet-sample + the train part of the
   fixed caltech101 split), 96 px, on the CPU;
2. a linear probe on held-out labelled images: fitted on the split's train part, tested
   on its test part, for the trained student, a randomly initialised ResNet-18 and the
   teacher, side by side;
3. pictures of what the student predicts (teacher features vs student prediction), for
   the trained and the untrained student, and the loss curves (curves.png).
Outputs go to work_dirs/demo/; a re-run resumes (finished stages are skipped).
"""
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.normpath(osp.join(ROOT, '..', 'shared', 'data'))
WORK = osp.join(ROOT, 'work_dirs', 'demo')
HGKD_CFG = 'configs/pretrain/hgkd_vit-tiny-p16_resnet18_1xb32-2e_pool-96px.py'
TEACHER = 'checkpoints/mae_vit-tiny-p16_pool-96px.pth'
TEACHER_CFG = 'configs/pretrain/mae_vit-tiny-p16_1xb64-40e_pool-96px.py'
SPLITS = 'configs/splits'
IMG_SIZE = 96
SEEDS = ('0', '1', '2')
PICTURE_ROWS = (0, 300, 600, 900)  # test-part images drawn by visualize_distill.py


def run(*args: str) -> None:
    print('[demo] $ python ' + ' '.join(args), flush=True)
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def probe(name: str, checkpoint: str, arch: str) -> dict:
    out = osp.join(WORK, 'probe', f'{name}.json')
    if not osp.isfile(out) or (checkpoint != 'random'
                               and os.stat(out).st_mtime < os.stat(checkpoint).st_mtime):
        run('tools/analysis_tools/probe.py', checkpoint, '--linear', '--arch', arch,
            '--data', f'{SPLITS}/caltech101_train.txt', '--test-dir',
            f'{SPLITS}/caltech101_test.txt', '--data-root', DATA, '--img-size', str(IMG_SIZE),
            '--seeds', *SEEDS, '--cache-dir', osp.join(WORK, 'probe_cache'), '--out', out)
    with open(out) as f:
        return json.load(f)


def picture_images() -> list:
    """A few images of the split's test part, drawn in the pictures."""
    with open(osp.join(ROOT, SPLITS, 'caltech101_test.txt')) as f:
        rows = f.read().splitlines()
    return [osp.join(DATA, rows[i].rsplit(' ', 1)[0]) for i in PICTURE_ROWS]


def pictures(name: str, checkpoint: str) -> str:
    """Teacher target vs student prediction for :func:`picture_images` (same masks)."""
    out = osp.join(WORK, 'pictures', name)
    run('tools/analysis_tools/visualize_distill.py', HGKD_CFG, checkpoint, *picture_images(),
        '--out-dir', out, '--mask-seed', '0')
    return out


def main() -> None:
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    if not osp.isdir(osp.join(DATA, 'caltech101', 'train')):
        sys.exit(f'{DATA}/caltech101/train not found: the demo needs the shared data')
    images = picture_images()
    # DistillVisualizationHook: a picture per epoch in the run's vis_data (training unchanged)
    run('tools/train.py', HGKD_CFG, '--work-dir', 'work_dirs/demo/hgkd', '--resume',
        '--cfg-options', 'default_hooks.distill_vis.type=DistillVisualizationHook',
        'default_hooks.distill_vis.interval=140',
        f'default_hooks.distill_vis.images=[{images[0]},{images[1]}]')
    student = osp.join(WORK, 'hgkd', 'epoch_2.pth')
    rows = [('H-GKD ResNet-18 (this run)', probe('hgkd', student, 'resnet18')),
            ('random ResNet-18', probe('random', 'random', 'resnet18')),
            ('MAE ViT teacher (shipped)', probe('teacher', TEACHER, f'vit:{TEACHER_CFG}'))]
    lines = ['| model | linear top-1, caltech101 test part (mean ± std, seeds 0 1 2) |',
             '| --- | --- |']
    lines += [f"| {name} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} |" for name, r in rows]
    table = '\n'.join(lines)
    with open(osp.join(WORK, 'probe.md'), 'w') as f:
        f.write(table + '\n')
    trained, untrained = pictures('trained', student), pictures('untrained', 'random')
    run('tools/analysis_tools/plot_curves.py', 'work_dirs/demo/hgkd', '--keys', 'loss_feat', 'lr',
        '--out', 'work_dirs/demo/curves.png')
    print('\n[demo] held-out linear probe (101 classes, chance 0.99%):\n' + table, flush=True)
    print(f'[demo] pictures of what the student predicts: {trained}/ (untrained: {untrained}/)')


if __name__ == '__main__':
    main()
