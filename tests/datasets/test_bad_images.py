"""Every decodable image trains (alpha, 16 bit, gray, CMYK, EXIF-rotated, smaller than the
crop); an undecodable one stops the run naming it, or with ``on_error='skip'`` is logged,
replaced and counted at the end of the epoch."""
from __future__ import annotations

import logging
import re

import cv2
import numpy as np
import pytest
from fault_setup import image_folder, run, train_command, write_config
from mmcv.transforms import Compose
from mmengine.registry import DefaultScope
from PIL import Image, ImageOps

from hgkd_mm.datasets import LoadImageOrRaise
from mmpretrain.registry import TRANSFORMS


def pixels(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random pixels (JPEG keeps them close), ``(h, w, channels)`` uint8."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(h // 8, 1), max(w // 8, 1), channels), dtype=np.uint8)
    return np.asarray(Image.fromarray(small.squeeze()).resize((w, h), Image.BILINEAR))


def write_decodable(folder) -> dict:
    """Files every decoder must read: name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = pixels(40, 48)
    paths = {}

    def save(name, image, **kwargs):
        paths[name] = folder / name
        image.save(paths[name], **kwargs)

    save('rgba.png', Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])))
    paths['16bit.png'] = folder / '16bit.png'
    cv2.imwrite(str(paths['16bit.png']), rgb.astype(np.uint16) * 257)
    save('gray.jpg', Image.fromarray(rgb[..., 0]))
    save('cmyk.jpg', Image.fromarray(rgb).convert('CMYK'))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save('exif_rotated.jpg', Image.fromarray(rgb), exif=exif)
    save('tiny.png', Image.fromarray(pixels(8, 6)))  # smaller than the 24 px crop
    return paths


def write_undecodable(folder) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = folder / 'whole.jpg'
    Image.fromarray(pixels(40, 48)).save(jpeg)
    png = folder / 'whole.png'
    Image.fromarray(pixels(40, 48)).save(png)
    paths = {name: folder / name
             for name in ('zero.jpg', 'truncated.jpg', 'truncated.png', 'text.jpg')}
    paths['zero.jpg'].write_bytes(b'')
    paths['truncated.jpg'].write_bytes(jpeg.read_bytes()[:len(jpeg.read_bytes()) // 2])
    paths['truncated.png'].write_bytes(png.read_bytes()[:300])
    paths['text.jpg'].write_text('this is not an image\n')
    jpeg.unlink(), png.unlink()
    return paths


PIPELINE = [dict(type='RandomResizedCrop', scale=24), dict(type='RandomFlip', prob=0.5),
            dict(type='PackInputs')]


def load(path, **kwargs):
    # whatever default scope an earlier test's Runner left behind
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose([TRANSFORMS.build(dict(type='LoadImageOrRaise', **kwargs))]
                           + [TRANSFORMS.build(t) for t in PIPELINE])
    return pipeline(dict(img_path=str(path)))


@pytest.fixture(scope='module')
def decodable(tmp_path_factory):
    return write_decodable(tmp_path_factory.mktemp('decodable'))


@pytest.mark.parametrize('name', ['rgba.png', '16bit.png', 'gray.jpg', 'cmyk.jpg',
                                  'exif_rotated.jpg', 'tiny.png'])
def test_decodable_images_become_3_channel_crops(decodable, name):
    packed = load(decodable[name])
    assert packed['inputs'].shape == (3, 24, 24) and str(packed['inputs'].dtype) == 'torch.uint8'


def test_decoded_pixels_match_pillow(decodable):
    """The loader's BGR image against pillow's decoding (EXIF rotation applied)."""
    loader = LoadImageOrRaise()
    for name, mode in (('rgba.png', 'RGB'), ('16bit.png', None), ('gray.jpg', 'RGB'),
                       ('exif_rotated.jpg', 'RGB')):
        image = loader(dict(img_path=str(decodable[name])))['img'][..., ::-1]  # to RGB
        with Image.open(decodable[name]) as reference:
            if mode is None:  # pillow reads 16-bit RGB PNG as 8 bit (its high byte)
                expected = np.asarray(reference.convert('RGB'))
            else:
                expected = np.asarray(ImageOps.exif_transpose(reference).convert(mode))
        assert image.shape == expected.shape, name
        assert np.abs(image.astype(int) - expected).mean() < 2, name


@pytest.fixture(scope='module')
def undecodable(tmp_path_factory):
    return write_undecodable(tmp_path_factory.mktemp('undecodable'))


@pytest.mark.parametrize('name', ['zero.jpg', 'truncated.jpg', 'truncated.png', 'text.jpg'])
def test_undecodable_file_raises_naming_it(undecodable, name):
    with pytest.raises(OSError, match=f'cannot read image {re.escape(str(undecodable[name]))}'):
        load(undecodable[name])


def test_skip_logs_each_path_and_counts(undecodable, decodable, caplog):
    loader = LoadImageOrRaise(on_error='skip')
    with caplog.at_level(logging.WARNING):
        for path in list(undecodable.values()) + list(decodable.values()):
            loaded = loader(dict(img_path=str(path)))
            assert (loaded is None) == (path in undecodable.values())
    assert loader.take_skipped() == 4 and loader.take_skipped() == 0
    assert 'on_error=' in repr(loader)


def test_on_error_is_checked():
    with pytest.raises(ValueError, match="on_error must be one of .*got 'ignore'"):
        LoadImageOrRaise(on_error='ignore')


@pytest.fixture(scope='module')
def mixed_folder(tmp_path_factory, decodable, undecodable):
    """The 16-image training folder plus every decodable and undecodable file in class a."""
    folder = image_folder(tmp_path_factory.mktemp('mixed') / 'images')
    for path in list(decodable.values()) + list(undecodable.values()):
        (folder / 'a' / path.name).write_bytes(path.read_bytes())
    return folder


def test_training_stops_at_an_undecodable_file_by_default(mixed_folder, tmp_path):
    config = write_config(tmp_path / 'raise.py', mixed_folder, epochs=1)
    result = run(train_command(config, tmp_path / 'work'))
    assert result.returncode != 0
    assert re.search(rf'cannot read image {mixed_folder}/a/(zero|text|truncated)\.(jpg|png)',
                     result.stderr)


def test_training_skips_undecodable_files_and_counts_them(mixed_folder, tmp_path):
    config = write_config(tmp_path / 'skip.py', mixed_folder, epochs=2, on_error='skip')
    result = run(train_command(config, tmp_path / 'work'))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    skipped = re.findall(r'skipped image (\S+) \(#', log)
    assert {p.rsplit('/', 1)[1] for p in skipped} == {'zero.jpg', 'truncated.jpg', 'truncated.png',
                                                        'text.jpg'}
    counts = [int(n) for n in re.findall(r'epoch \d: skipped (\d+) unreadable', log)]
    assert len(counts) == 2 and min(counts) >= 4 and sum(counts) == len(skipped)
