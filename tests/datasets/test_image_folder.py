"""ImageFolderDataset and configs/pretrain/hgkd_r50_custom-folder.py: every image below a
folder (nested, mixed formats, small) is found and trains with tools/train.py; an empty or
unset folder and an unreadable file are named."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones import VisionTransformer
from PIL import Image

from helpers import ROOT, run_tool

from hgkd_mm.datasets import ImageFolderDataset

CONFIG = ROOT / 'configs' / 'pretrain' / 'hgkd_r50_custom-folder.py'


def mixed_images(root: Path) -> list:
    """A nested folder of JPEG, PNG (with alpha), WebP, grayscale, CMYK and small images,
    one name in upper case, plus a text file that is not an image."""
    rng = np.random.RandomState(0)

    def rgb(h, w):
        return Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8))

    files = {
        'a/rgb.jpg': rgb(48, 64),
        'a/b/alpha.png': rgb(40, 40).convert('RGBA'),
        'a/b/c/photo.webp': rgb(64, 48),
        'gray.jpeg': rgb(50, 50).convert('L'),
        'd/cmyk.jpg': rgb(56, 40).convert('CMYK'),
        'd/tiny.png': rgb(12, 9),  # smaller than the crop
        'd/UPPER.JPG': rgb(32, 32),
        'e/f/g/deep.bmp': rgb(36, 36),
    }
    for name, image in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / name)
    (root / 'a' / 'notes.txt').write_text('not an image')
    return sorted(str(root / name) for name in files)


def teacher_file(path: Path) -> Path:
    """A random DeiT-tiny (patch 16, 224 px) in mmpretrain's model-zoo format."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        vit = VisionTransformer('deit-tiny', img_size=224, patch_size=16)
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in vit.state_dict().items()}}, path)
    return path


def test_finds_every_image_at_any_depth_and_loads_it(tmp_path):
    expected = mixed_images(tmp_path / 'images')
    dataset = ImageFolderDataset(data_root=str(tmp_path / 'images'), pipeline=[
        dict(type='LoadImageOrRaise'),
        dict(type='RandomResizedCrop', scale=32, backend='pillow'),
        dict(type='PackInputs')])
    assert sorted(dataset.get_data_info(i)['img_path'] for i in range(len(dataset))) == expected
    for i in range(len(dataset)):
        assert dataset[i]['inputs'].shape == (3, 32, 32)


@pytest.mark.parametrize('content', ['empty', 'no-images'])
def test_folder_without_images_is_named(tmp_path, content):
    folder = tmp_path / 'mine'
    (folder / 'sub').mkdir(parents=True)
    if content == 'no-images':
        (folder / 'sub' / 'readme.txt').write_text('text')
    with pytest.raises(FileNotFoundError, match=f'no images in .*{folder}'):
        ImageFolderDataset(data_root=str(folder))


def test_unset_or_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match='train_dataloader.dataset.data_root=DIR'):
        ImageFolderDataset(data_root=None)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}.* does not exist"):
        ImageFolderDataset(data_root=str(tmp_path / 'nowhere'))


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / 'x').mkdir()
    broken = tmp_path / 'x' / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 not really a jpeg')
    dataset = ImageFolderDataset(data_root=str(tmp_path), pipeline=[dict(type='LoadImageOrRaise')])
    with pytest.raises(OSError, match=f'cannot read image {broken}'):
        dataset[0]


def custom_folder_command(data_root: Path, teacher: Path, work_dir: Path) -> list:
    """tools/train.py with the config as shipped, on 64 px crops and a DeiT-tiny teacher."""
    pipeline = Config.fromfile(CONFIG).train_dataloader.dataset.pipeline
    crop = next(i for i, transform in enumerate(pipeline) if 'scale' in transform)
    return ['tools/train.py', CONFIG, '--work-dir', work_dir, '--cfg-options',
            f'train_dataloader.dataset.data_root={data_root}',
            'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            f'train_dataloader.dataset.pipeline.{crop}.scale=64', 'train_cfg.max_epochs=1',
            'default_hooks.logger.interval=1', 'model.teacher.arch=deit-tiny',
            f'model.teacher.checkpoint={teacher}']


def test_custom_folder_config_trains_with_tools_train(tmp_path):
    images = mixed_images(tmp_path / 'images')
    teacher = teacher_file(tmp_path / 'deit-tiny.pth')
    result = run_tool(custom_folder_command(tmp_path / 'images', teacher, tmp_path / 'work'),
                      threads=2)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert f'FrozenViTTeacher loaded {teacher}' in log
    steps = len(images) // 4
    assert f'Epoch(train) [1][{steps}/{steps}]' in log and 'loss_feat: ' in log
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


def test_custom_folder_config_stops_before_training_on_an_empty_folder(tmp_path):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    teacher = teacher_file(tmp_path / 'deit-tiny.pth')
    result = run_tool(custom_folder_command(tmp_path / 'empty', teacher, tmp_path / 'work'),
                      threads=2)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"no images in '{tmp_path / 'empty'}" in log
    assert 'Epoch(train)' not in log
