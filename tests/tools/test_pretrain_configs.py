"""configs/pretrain: every shipped config builds its model, the paper config without
ImageNet points to the demo, and `tools/train.py configs/pretrain/hgkd_r50.py` trains as
shipped once ImageNet and the teacher checkpoint (in torch hub's cache, where the URL
leads) are present."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS

from helpers import ROOT

from hgkd_mm.utils import check_data_paths

PAPER_CONFIG = ROOT / 'configs' / 'pretrain' / 'hgkd_r50.py'
IMAGENET_SAMPLE = (ROOT / '..' / 'shared' / 'data' / 'imagenet-sample').resolve()
# (config, student depth, teacher width)
CONFIGS = [
    ('hgkd_r50.py', 50, 768),
    ('hgkd_vit-base-p16_resnet50_8xb512-amp-coslr-800e_in1k.py', 50, 768),
    ('hgkd_vit-base-p16_resnet18_8xb512-amp-coslr-800e_in1k.py', 18, 768),
    ('hgkd_vit-base-p16_resnet101_8xb512-amp-coslr-800e_in1k.py', 101, 768),
    ('hgkd_vit-large-p16_resnet50_8xb512-amp-coslr-800e_in1k.py', 50, 1024),
]


@pytest.mark.parametrize('name, depth, width', CONFIGS, ids=[c[0] for c in CONFIGS])
def test_config_builds(name, depth, width):
    cfg = Config.fromfile(ROOT / 'configs' / 'pretrain' / name)
    assert cfg.model.teacher.checkpoint.startswith('https://download.openmmlab.com/')
    # mmengine's Runner passes every key but `type` to the collate function
    assert dict(cfg.train_dataloader.collate_fn) == dict(type='default_collate')
    assert cfg.train_dataloader.drop_last is True  # one batch shape: no recompile
    # the setting benchmark_pretrain.py times; the rest of env_cfg is mmpretrain's
    assert cfg.env_cfg.cudnn_benchmark is True
    # the process-group timeout bounds a hang when a rank dies (docs/robustness.md)
    assert cfg.env_cfg.dist_cfg == dict(backend='nccl', timeout=1800)
    cfg.model.teacher.checkpoint = None  # no download here: a random teacher
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert (type(model).__name__, model.backbone.depth) == ('HGKD', depth)
    assert model.teacher.embed_dims == width == model.head.target_dims
    assert model.mask_ratio == 0.6


def test_paper_config_without_imagenet_points_to_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        check_data_paths(Config.fromfile(PAPER_CONFIG), ('train_dataloader', ))
    assert 'data/imagenet' in str(error.value) and 'make demo' in str(error.value)


def fake_imagenet(root: Path, classes: int = 4) -> None:
    """mmpretrain's ImageNet layout under ``root/data/imagenet``: ``train/<synset>/`` (real
    photos, one per class) and ``meta/train.txt``."""
    imagenet = root / 'data' / 'imagenet'
    (imagenet / 'train').mkdir(parents=True)
    (imagenet / 'meta').mkdir()
    lines = []
    for label, synset in enumerate(sorted(os.listdir(IMAGENET_SAMPLE))[:classes]):
        os.symlink(IMAGENET_SAMPLE / synset, imagenet / 'train' / synset)
        lines += [f'{synset}/{name} {label}' for name in os.listdir(IMAGENET_SAMPLE / synset)]
    (imagenet / 'meta' / 'train.txt').write_text('\n'.join(lines) + '\n')


def cache_teacher(torch_home: Path, url: str) -> Path:
    """A random ViT-B/16 in mmpretrain's model-zoo format, where the URL downloads to."""
    torch.manual_seed(0)
    vit = VisionTransformer('base', img_size=224, patch_size=16)
    path = torch_home / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]
    path.parent.mkdir(parents=True)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in vit.state_dict().items()}},
               path)
    return path


def test_paper_config_trains_as_shipped(tmp_path):
    fake_imagenet(tmp_path)
    teacher = cache_teacher(tmp_path / 'torch', Config.fromfile(PAPER_CONFIG).teacher_checkpoint)
    command = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(PAPER_CONFIG),
               '--work-dir', 'work', '--cfg-options', 'train_dataloader.batch_size=2',
               'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
               'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1']
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch'), OMP_NUM_THREADS='2')
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert 'FrozenViTTeacher has no checkpoint' not in log
    url = Config.fromfile(PAPER_CONFIG).teacher_checkpoint
    assert f'FrozenViTTeacher loaded {url}: 150 encoder tensors' in log
    assert 'No CUDA: AmpOptimWrapper' in log or torch.cuda.is_available()
    assert 'Epoch(train) [1][2/2]' in log and 'loss_feat: ' in log
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    assert teacher.is_file()
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu', weights_only=True)
    assert not any(key.startswith('teacher.') for key in saved['state_dict'])
