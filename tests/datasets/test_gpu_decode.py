"""The GPU decode path draws the crops and flips of the CPU pipeline and, run on the CPU
here (its fallback), gives the same images up to the resize filter's rounding."""
import numpy as np
import pytest
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope
from PIL import Image

import hgkd_mm  # noqa: F401
from hgkd_mm.datasets import gpu_decode
from hgkd_mm.datasets.gpu_decode import META_KEYS, JpegDecodeDataPreprocessor
from mmpretrain.models.utils import SelfSupDataPreprocessor

CROP = dict(scale=48, crop_ratio_range=(0.2, 1.0))
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)


def photos(root, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = 100 + 20 * i, 130 - 10 * i
        y, x = np.mgrid[:h, :w]
        image = np.stack([x * 255 // w, y * 255 // h, (3 * x + y) % 256], -1)
        image = np.clip(image + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)
        paths.append(root / f'{i}.jpg')
        Image.fromarray(image).save(paths[-1], quality=92)
    return paths


def batch(pipeline, paths, seed):
    np.random.seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        compose = Compose(pipeline)
        return pseudo_collate([compose(dict(img_path=str(p))) for p in paths])


GPU_PIPELINE = [dict(type='LoadJpegCropParams', **CROP),
                dict(type='PackInputs', meta_keys=META_KEYS)]
CPU_PIPELINE = [dict(type='LoadRandomResizedCrop', draft=False, interpolation='bicubic',
                     **CROP),
                dict(type='RandomFlip', prob=0.5), dict(type='PackInputs', meta_keys=META_KEYS)]


@pytest.fixture
def warnings(monkeypatch):
    messages = []
    monkeypatch.setattr(gpu_decode, 'print_log', lambda msg, **kwargs: messages.append(msg))
    return messages


def test_same_crops_as_the_cpu_pipeline(tmp_path, warnings):
    paths = photos(tmp_path)
    preprocessor = JpegDecodeDataPreprocessor(**NORM)
    for seed in range(3):
        encoded = batch(GPU_PIPELINE, paths, seed)
        cpu = batch(CPU_PIPELINE, paths, seed)
        # the same draws: identical boxes and flips
        assert [s.crop_box for s in encoded['data_samples']] == [
            s.crop_box for s in cpu['data_samples']]
        assert [s.flip for s in encoded['data_samples']] == [s.flip for s in cpu['data_samples']]
        decoded = preprocessor(encoded, training=True)['inputs']
        reference = SelfSupDataPreprocessor(**NORM)(
            dict(inputs=torch.stack(cpu['inputs']), data_samples=cpu['data_samples']))['inputs']
        assert decoded.shape == reference.shape == (len(paths), 3, 48, 48)
        # torch's antialiased bicubic against pillow's: within a few levels
        levels = (decoded - reference).abs() * torch.tensor(NORM['std']).view(1, 3, 1, 1)
        assert levels.mean() < 1.5 and levels.max() < 40, (levels.mean(), levels.max())
    assert len(warnings) == 1 and 'not on a CUDA device' in warnings[0]


def test_undecodable_file_is_named(tmp_path, warnings):
    paths = photos(tmp_path, n=2)
    broken = tmp_path / 'broken.jpg'
    data = paths[0].read_bytes()
    broken.write_bytes(data[:len(data) // 3] + bytes(len(data) // 3))  # header, then zeros
    encoded = batch(GPU_PIPELINE, [paths[1], broken], 0)
    with pytest.raises(OSError, match='broken.jpg'):
        JpegDecodeDataPreprocessor(**NORM)(encoded)
    (tmp_path / 'text.jpg').write_text('not a jpeg')
    with pytest.raises(OSError, match='text.jpg'):
        batch(GPU_PIPELINE, [tmp_path / 'text.jpg'], 0)


def test_flip_prob_is_refused_as_random_flip_refuses_it():
    from hgkd_mm.datasets.gpu_decode import LoadJpegCropParams
    for bad in (1.5, -0.1, 1):
        with pytest.raises(ValueError, match=r'LoadJpegCropParams: flip_prob must be in '
                                             r'\[0, 1\], got'):
            LoadJpegCropParams(scale=32, flip_prob=bad)


def test_needs_its_pipeline_and_pseudo_collate(tmp_path, warnings):
    paths = photos(tmp_path, n=2)
    with pytest.raises(ValueError, match='pseudo_collate'):
        JpegDecodeDataPreprocessor(**NORM)(dict(inputs=torch.zeros(2, 3, 8, 8),
                                                data_samples=None))
    plain = batch([dict(type='LoadJpegCropParams', **CROP), dict(type='PackInputs')], paths, 0)
    with pytest.raises(ValueError, match='META_KEYS'):
        JpegDecodeDataPreprocessor(**NORM)(plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gpu_decode_matches_the_cpu_fallback(tmp_path, warnings):
    paths = photos(tmp_path)
    encoded = batch(GPU_PIPELINE, paths, 0)
    on_cpu = JpegDecodeDataPreprocessor(**NORM)(encoded)['inputs']
    on_gpu = JpegDecodeDataPreprocessor(**NORM).cuda()(encoded)['inputs']
    assert on_gpu.is_cuda and not warnings[1:]
    levels = (on_gpu.cpu() - on_cpu).abs() * torch.tensor(NORM['std']).view(1, 3, 1, 1)
    assert levels.mean() < 1.0


def test_gpu_decode_config_builds_and_runs(tmp_path, warnings):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile('configs/pretrain/hgkd_r50_gpu-decode.py')
    assert cfg.train_dataloader.collate_fn.type == 'pseudo_collate'
    encoded = batch(cfg.train_dataloader.dataset.pipeline, photos(tmp_path, n=2), 0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    assert preprocessor(encoded, training=True)['inputs'].shape == (2, 3, 224, 224)
