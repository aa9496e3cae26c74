"""benchmark_pretrain.py --data: the Runner loop on a folder of JPEGs and the loader-only
rates, beside the bare step (hgkd_mm/benchmark/runner_loop.py)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmcv.transforms import BaseTransform
from mmengine.logging import MessageHub
from mmpretrain.registry import TRANSFORMS

from hgkd_mm.benchmark.runner_loop import (IterClock, image_encoding, loader_rates,
                                           pipeline_variants)
from helpers import IMAGENET_PREPROCESSOR, load_tool, tiny_hgkd_cfg

PIPELINE = [dict(type='LoadRandomResizedCrop', scale=64, crop_ratio_range=(0.67, 1.0),
                 interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
TINY_CONFIG = f"""
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = {tiny_hgkd_cfg(data_preprocessor=IMAGENET_PREPROCESSOR)!r}
train_dataloader = dict(batch_size=2, num_workers=0, collate_fn=dict(type='default_collate'),
                        sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(type='CustomDataset', data_root='unused',
                                     pipeline={PIPELINE!r}))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04),
                     clip_grad=dict(max_norm=5.0))
custom_hooks = [dict(type='ThroughputHook')]
"""


def test_mmpretrain_variant_of_the_loaders():
    variants = pipeline_variants(PIPELINE)
    assert variants['config'] == PIPELINE
    assert [t['type'] for t in variants['mmpretrain']] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert variants['mmpretrain'][1] == dict(type='RandomResizedCrop', scale=64,
                                             crop_ratio_range=(0.67, 1.0),
                                             interpolation='bicubic', backend='pillow')
    gpu = pipeline_variants([dict(type='LoadJpegCropParams', scale=64, flip_prob=0.25),
                             dict(type='PackInputs')])
    assert [t['type'] for t in gpu['mmpretrain']] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert gpu['mmpretrain'][2]['prob'] == 0.25
    assert pipeline_variants([dict(type='LoadImageFromFile')]).keys() == {'config'}


DRAWS = []


@TRANSFORMS.register_module(force=True)
class RecordDraw(BaseTransform):
    """Appends (name, one draw of numpy's global RNG) per image."""

    def __init__(self, name):
        self.name = name

    def transform(self, results):
        DRAWS.append((self.name, np.random.random_sample()))
        return dict(inputs=torch.zeros(1))


def test_loader_rates_take_turns_with_a_stream_each(tmp_path):
    for i in range(7):
        Image.new('RGB', (8, 8)).save(tmp_path / f'{i}.jpg')
    files = sorted(p.name for p in tmp_path.iterdir())
    DRAWS.clear()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    pipelines = {name: [dict(type='LoadImageFromFile'), dict(type='RecordDraw', name=name)]
                 for name in ('a', 'b')}
    rates = loader_rates(pipelines, str(tmp_path), files, rounds=2, seed=5, block=3)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's RNG state kept
    # turns of 3, 3 and 1 images, then the next round
    assert ''.join(name for name, _ in DRAWS[:16]) == 'aaabbbaaabbbab' + 'aa'
    draws = {name: [v for n, v in DRAWS if n == name] for name in 'ab'}
    assert len(draws['a']) == 3 * 7  # a warm-up round and two timed ones
    assert draws['a'] == draws['b']  # the same stream each, however they interleave
    np.random.seed(5 + 1)  # round 1 draws from seed + 1
    assert draws['a'][7:14] == [np.random.random_sample() for _ in range(7)]
    for rate in rates.values():
        assert len(rate['cpu_s_rounds']) == 2 and rate['images'] == 7 and rate['block'] == 3
        assert rate['img_per_s_cpu'] == pytest.approx(7 / np.median(rate['cpu_s_rounds']))


def test_data_option_times_runner_and_loaders(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / 'images' / 'sub'
    images.mkdir(parents=True)
    for i in range(5):
        pixels = rng.integers(0, 255, (90 + 10 * i, 110, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f'{i}.jpg')
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'result.json'
    threads = torch.get_num_threads()
    try:
        load_tool('analysis_tools/benchmark_pretrain.py').main(
            [str(config), '--device', 'cpu', '--batch-size', '2', '--iters', '3', '--warmup',
             '1', '--threads', '1', '--workers', '0', '--data', str(tmp_path / 'images'),
             '--out', str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    data = result['data']
    # the bare step before the Runner loop and again after it; the loop against their mean
    before, after = data['step_img_per_s_each']
    assert before == result['hgkd']['img_per_s'] and after > 0
    assert data['step_img_per_s'] == pytest.approx((before + after) / 2)
    assert data['encoding']['jpeg'] == 5 and data['encoding']['subsampling']['420'] == 5
    for name in ('config', 'mmpretrain'):
        assert data['loader'][name]['img_per_s'] > 0 and data['loader'][name]['images'] == 5
    rounds = data['loader_vs_mmpretrain_rounds']
    assert len(rounds) == data['loader']['config']['rounds']
    assert rounds == pytest.approx([ref / own for ref, own in zip(
        data['loader']['mmpretrain']['cpu_s_rounds'], data['loader']['config']['cpu_s_rounds'])])
    assert data['loader_vs_mmpretrain'] == pytest.approx(np.median(rounds))
    runner = data['runner']
    assert (runner['iters'], runner['warmup'], runner['batch_size']) == (3, 1, 2)
    assert runner['img_per_s'] > 0 and 0 <= runner['data_wait'] < 1
    assert data['runner_vs_step'] == pytest.approx(runner['img_per_s'] / data['step_img_per_s'])


@pytest.mark.parametrize('warmup', [0, 1])
def test_iter_clock_times_the_iterations_after_the_warmup(warmup):
    hub = MessageHub.get_instance('iter_clock_test')
    runner = SimpleNamespace(iter=0, max_iters=3, message_hub=hub)
    clock = IterClock(warmup)
    clock.before_train_epoch(runner)
    for i in range(3):
        runner.iter = i
        hub.update_scalar('train/time', 0.5 + i)
        hub.update_scalar('train/data_time', 0.1 * i)
        if i == warmup:
            timed_from = clock.start
            assert timed_from is not None  # set by the epoch's start or the warm-up's end
        clock.after_train_iter(runner, i)
    assert clock.start == timed_from and clock.end >= clock.start
    assert clock.seconds == [0.5 + i for i in range(warmup, 3)]
    assert clock.data_seconds == pytest.approx([0.1 * i for i in range(warmup, 3)])


def test_image_encoding_reads_the_headers(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    for name, subsampling in (('a', 0), ('b', 2), ('c', 2), ('d', 1)):
        photo.save(tmp_path / f'{name}.jpg', subsampling=subsampling, quality=90)
    photo.convert('L').save(tmp_path / 'grey.jpg')
    photo.save(tmp_path / 'e.png')
    paths = sorted(str(p) for p in tmp_path.iterdir())
    encoding = image_encoding(paths)
    assert encoding['images'] == 6 and encoding['jpeg'] == 5
    assert encoding['subsampling'] == {'444': 1, '422': 1, '420': 2, 'other': 1}
    assert encoding['mean_pixels'] == 40 * 60
    jpegs = [p for p in paths if p.endswith('.jpg')]
    sizes = [(tmp_path / p).stat().st_size for p in jpegs]
    assert encoding['bits_per_pixel'] == pytest.approx(8 * np.mean(sizes) / (40 * 60))
    assert image_encoding([str(tmp_path / 'e.png')])['bits_per_pixel'] == 0.0  # no JPEG


def test_data_must_be_a_folder(tmp_path):
    with pytest.raises(SystemExit):
        load_tool('analysis_tools/benchmark_pretrain.py').parse_args(
            ['tiny.py', '--data', str(tmp_path / 'missing')])
