"""tools/analysis_tools/probe.py on tiny generated image folders (seconds on a CPU)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import ResNet, VisionTransformer
from PIL import Image

from hgkd_mm.evaluation import probe

ROOT = Path(__file__).resolve().parents[3]

COLOURS = ((220, 40, 40), (40, 200, 40), (40, 40, 220), (230, 210, 40))
TINY_VIT = dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                img_size=32, patch_size=16)


def make_folder(root: Path, per_class: int, signal: bool, size: int = 32, seed: int = 0) -> Path:
    """4 class folders. ``signal``: each class a colour with a stripe pattern plus noise;
    otherwise pure noise images dealt to the classes at random (no learnable signal)."""
    rng = np.random.RandomState(seed)
    for label, colour in enumerate(COLOURS):
        (root / f'class_{label}').mkdir(parents=True)
        for i in range(per_class):
            noise = rng.randint(-40, 41, (size, size, 3))
            if signal:
                pixels = np.array(colour)[None, None] + noise
                pixels[:, label::4] //= 2  # a class-specific stripe phase
            else:
                pixels = rng.randint(0, 256, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                root / f'class_{label}' / f'{i:03d}.png')
    return root


def make_quadrant_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """4 classes: a bright 8x8 square somewhere in quadrant ``label`` of a 32x32 noise image.
    Global average pooling of a random CNN hardly sees where the square is."""
    rng = np.random.RandomState(seed)
    for label in range(4):
        (root / f'quadrant_{label}').mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.randint(0, 60, (32, 32, 1)).repeat(3, 2) + rng.randint(0, 60)
            top = 16 * (label // 2) + rng.randint(2, 7)
            left = 16 * (label % 2) + rng.randint(2, 7)
            pixels[top:top + 8, left:left + 8] = 200 + rng.randint(0, 55)
            Image.fromarray(pixels.astype(np.uint8)).save(root / f'quadrant_{label}' / f'{i}.png')
    return root


def train_vit_teacher(data: Path, path: Path, steps: int = 150) -> Path:
    """A tiny ViT trained on ``data``'s labels for a few seconds, saved as a checkpoint."""
    folder = probe.scan_image_folder(str(data))
    images = probe.normalize(probe.load_images(folder.paths, 32))
    labels = torch.as_tensor(folder.labels)
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY_VIT, out_type='featmap', with_cls_token=True)
    vit.init_weights()
    head = torch.nn.Linear(TINY_VIT['arch']['embed_dims'], 4)
    optimizer = torch.optim.AdamW([*vit.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (32, ))
        loss = F.cross_entropy(head(vit(images[batch])[-1].mean((2, 3))), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_backbone(path, vit)


def save_backbone(path: Path, backbone: torch.nn.Module, prefix: str = 'backbone.') -> Path:
    """An mmengine-style checkpoint: ``{'state_dict': {prefix + key: tensor}, 'meta': ...}``."""
    state = {prefix + k: v for k, v in backbone.state_dict().items()}
    torch.save(dict(state_dict=state, meta=dict(epoch=1)), path)
    return path


@pytest.fixture(scope='module')
def colour_folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp('colour'), per_class=12, signal=True)


@pytest.fixture(scope='module')
def resnet18_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    backbone = ResNet(depth=18)
    backbone.init_weights()
    return save_backbone(tmp_path_factory.mktemp('ckpt') / 'resnet18.pth', backbone)


def test_stratified_split_is_disjoint_per_class_and_seeded():
    labels = np.repeat(np.arange(5), [10, 7, 3, 2, 1])
    kept, held = probe.stratified_split(labels, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held])) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=5).tolist() == [2, 1, 1, 1, 0]
    assert set(labels[kept]) == set(range(5))  # a class never loses its last image
    again, _ = probe.stratified_split(labels, 0.2, seed=0)
    other, _ = probe.stratified_split(labels, 0.2, seed=1)
    assert (kept == again).all() and not np.array_equal(kept, other)


def test_linear_probe_separable_features_vs_random_labels():
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(50)
    centres = 3 * torch.randn(4, 16, generator=rng)
    features = centres[labels] + torch.randn(200, 16, generator=rng)
    train_idx, test_idx = probe.stratified_split(labels.numpy(), 0.3, seed=0)
    assert probe.linear_probe(features, labels, train_idx, test_idx, 0)['top1'] > 95

    noise = torch.randn(200, 16, generator=rng)  # no relation between features and labels
    top1 = [probe.linear_probe(noise, labels, *probe.stratified_split(labels.numpy(), 0.3, s),
                               s)['top1'] for s in range(3)]
    assert np.mean(top1) < 45  # chance: 25


def test_linear_probe_refuses_a_training_part_too_small_to_pick_the_decay():
    labels = torch.arange(4)  # one training image per class: no validation part (NaN)
    with pytest.raises(ValueError, match='too few per class .* --split'):
        probe.linear_probe(torch.randn(4, 8), labels, np.arange(4), np.arange(4), 0)


def test_cli_checkpoint_on_colour_classes(colour_folder, resnet18_checkpoint, tmp_path):
    out = tmp_path / 'result.json'
    completed = subprocess.run(
        [sys.executable, 'tools/analysis_tools/probe.py', str(resnet18_checkpoint), '--data',
         str(colour_folder), '--img-size', '32', '--seeds', '0', '1', '--split', '0.25',
         '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert 'top-1 mean ± std' in completed.stdout
    result = json.loads(out.read_text())
    assert [run['seed'] for run in result['runs']] == [0, 1]
    assert all(run['num_test'] == 12 and run['num_train'] == 36 for run in result['runs'])
    assert result['chance_top1'] == 25 and result['top1_mean'] >= 90


def test_random_backbone_is_near_chance_without_signal(tmp_path):
    data = make_folder(tmp_path / 'noise', per_class=20, signal=False)
    result = probe.evaluate('random', str(data), img_size=32, split=0.25, seeds=(0, 1, 2))
    assert result['top1_mean'] < 50  # chance 25; a broken split/label pairing would leak


def test_random_backbone_near_chance_teacher_clearly_above(tmp_path):
    """On data whose class is where a square lies, a random ResNet-18 stays near chance and
    a ViT teacher that has learned the task scores clearly above it: the probe tells a
    representation that holds the signal from one that does not."""
    data = make_quadrant_folder(tmp_path / 'quadrants', per_class=24)
    teacher = train_vit_teacher(data, tmp_path / 'teacher.pth')
    settings = dict(img_size=32, split=0.25, seeds=(0, 1, 2))
    random = probe.evaluate('random', str(data), **settings)
    taught = probe.evaluate(str(teacher), str(data), arch='vit:' + json.dumps(TINY_VIT),
                            **settings)
    assert random['chance_top1'] == 25 and random['top1_mean'] < 45
    assert taught['top1_mean'] > 65 and taught['top1_mean'] > random['top1_mean'] + 25


def test_features_are_cached_and_reused(colour_folder, resnet18_checkpoint, tmp_path,
                                        monkeypatch):
    first = probe.evaluate(str(resnet18_checkpoint), str(colour_folder), img_size=32,
                           cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob('features-*.pt'))) == 1
    assert len(list(tmp_path.glob('images-32px-*.npy'))) == 1

    def no_backbone(*args, **kwargs):
        raise AssertionError('features should come from the cache')

    monkeypatch.setattr(probe, 'build_backbone', no_backbone)
    second = probe.evaluate(str(resnet18_checkpoint), str(colour_folder), img_size=32,
                            cache_dir=str(tmp_path))
    assert second['top1_mean'] == first['top1_mean']


def test_test_dir_and_torchvision_keys(colour_folder, tmp_path):
    test_dir = make_folder(tmp_path / 'test', per_class=4, signal=True, seed=1)
    torch.manual_seed(0)
    backbone = ResNet(depth=18)
    state = {k: v for k, v in backbone.state_dict().items()}
    state.update({'fc.weight': torch.zeros(1000, 512), 'fc.bias': torch.zeros(1000)})
    checkpoint = tmp_path / 'torchvision_style.pth'
    torch.save(state, checkpoint)
    result = probe.evaluate(str(checkpoint), str(colour_folder), img_size=32,
                            test_dir=str(test_dir), seeds=(0, ))
    assert result['runs'][0]['num_train'] == 48 and result['runs'][0]['num_test'] == 16
    assert result['split'] is None

    (test_dir / 'class_0').rename(test_dir / 'other')
    with pytest.raises(ValueError, match='class folders'):
        probe.evaluate(str(checkpoint), str(colour_folder), img_size=32, test_dir=str(test_dir))


def test_wrong_arch_is_an_error(colour_folder, resnet18_checkpoint):
    with pytest.raises(RuntimeError, match='missing'):
        probe.evaluate(str(resnet18_checkpoint), str(colour_folder), arch='resnet50',
                       img_size=32)


def test_vit_checkpoint_mean_patch_tokens(colour_folder, tmp_path):
    torch.manual_seed(0)
    vit = VisionTransformer(**TINY_VIT, out_type='featmap', with_cls_token=True)
    checkpoint = save_backbone(tmp_path / 'vit.pth', vit)
    arch = 'vit:' + json.dumps(TINY_VIT)
    model = probe.build_backbone(arch, str(checkpoint))
    images = probe.normalize(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    with torch.no_grad():
        vit.eval()
        tokens = vit(images)[-1]  # (B, D, 2, 2) patch tokens after the final norm
        model.eval()
        assert torch.allclose(model(images), tokens.mean((2, 3)), atol=1e-6)
    result = probe.evaluate(str(checkpoint), str(colour_folder), arch=arch, img_size=64)
    assert result['feature'].startswith('mean of patch tokens') and result['top1_mean'] > 25


def test_finetune_runs(colour_folder, resnet18_checkpoint):
    result = probe.evaluate(str(resnet18_checkpoint), str(colour_folder), mode='finetune',
                            img_size=32, epochs=1, batch_size=16, seeds=(0, ))
    assert result['mode'] == 'finetune' and 0 <= result['top1_mean'] <= 100
    assert result['runs'][0]['epochs'] == 1


@pytest.mark.parametrize('argv, message', [
    (['random', '--data', '/no/such/folder'], '--data: no folder or ann file /no/such/folder'),
    (['/no/such.pth', '--data', '.'], 'checkpoint: no file /no/such.pth'),
    (['random', '--data', '.', '--test-dir', '/no/test'],
     '--test-dir: no folder or ann file /no/test'),
    (['random', '--data', '/no/train.txt'], '--data: no folder or ann file /no/train.txt'),
])
def test_missing_paths_are_named_before_anything_runs(argv, message, capsys):
    from helpers import load_tool
    with pytest.raises(SystemExit) as stop:
        load_tool('analysis_tools/probe.py').parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_ann_files_relative_to_a_data_root(colour_folder, resnet18_checkpoint, tmp_path):
    """The fixed-split form: ``<path> <label>`` ann files, paths relative to --data-root;
    the same images as a folder give the same result."""
    images = sorted(colour_folder.glob('*/*.png'))
    rows = [(p.relative_to(colour_folder.parent), int(p.parent.name[-1])) for p in images]
    train, test = tmp_path / 'train.txt', tmp_path / 'test.txt'
    train.write_text(''.join(f'{p} {label}\n' for i, (p, label) in enumerate(rows) if i % 4))
    test.write_text(''.join(f'{p} {label}\n' for i, (p, label) in enumerate(rows) if not i % 4))
    result = probe.evaluate(str(resnet18_checkpoint), str(train), img_size=32,
                            test_dir=str(test), data_root=str(colour_folder.parent))
    assert result['runs'][0]['num_train'] == 36 and result['runs'][0]['num_test'] == 12
    assert result['top1_mean'] >= 90

    bad = tmp_path / 'bad.txt'
    bad.write_text('a.png\n')
    with pytest.raises(ValueError, match='bad.txt: expected "<path> <label>" lines'):
        probe.evaluate('random', str(bad), img_size=32)
    unknown = tmp_path / 'unknown_label.txt'
    unknown.write_text(f'{rows[0][0]} 7\n')
    with pytest.raises(ValueError, match='label 7; the training data has 4 classes'):
        probe.evaluate('random', str(train), img_size=32, test_dir=str(unknown),
                       data_root=str(colour_folder.parent))
