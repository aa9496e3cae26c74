"""LoadRandomResizedCrop draws the crops of mmpretrain's RandomResizedCrop and gives its
pixels (full-size decode) or close ones (reduced-size decode)."""
import glob
import os
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from PIL import Image

import hgkd_mm  # noqa: F401
from hgkd_mm.datasets import fast_rrc
from hgkd_mm.datasets.fast_rrc import draft_scale, torch_resize
from mmpretrain.datasets.transforms import processing

COCO = sorted(glob.glob('../shared/data/coco-tiny/val2017/*.jpg'))
needs_coco = pytest.mark.skipif(not COCO, reason='needs ../shared/data/coco-tiny')
CROP = dict(crop_ratio_range=(0.2, 1.0), interpolation='bicubic', backend='pillow')


def build(pipeline):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return Compose(pipeline)


def run(pipeline, path, seed):
    """``pipeline`` (a list of transform dicts, or one built) on ``path`` after seeding."""
    compose = build(pipeline) if isinstance(pipeline, list) else pipeline
    np.random.seed(seed)
    return compose(dict(img_path=str(path)))


def mmpretrain_pipeline(size, decoder='pillow'):
    return [dict(type='LoadImageFromFile', imdecode_backend=decoder),
            dict(type='RandomResizedCrop', scale=size, **CROP),
            dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]


def fast_pipeline(size, draft=True, backend='torch'):
    return [dict(type='LoadRandomResizedCrop', scale=size, draft=draft,
                 **dict(CROP, backend=backend)),
            dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]


def photo(tmp_path, size=(160, 120), name='photo.jpg'):
    """A JPEG with structure at every scale (smooth gradients and noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size[1], :size[0]]
    image = np.stack([x * 255 // size[0], y * 255 // size[1], (x + y) % 256], -1)
    image = np.clip(image + rng.integers(-40, 40, image.shape), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / name, quality=90)
    return tmp_path / name


def test_same_pixels_as_mmpretrain_with_full_size_decode(tmp_path):
    """Same seed: the same boxes, flips and bicubic resize, bit for bit."""
    path = photo(tmp_path)
    for seed in range(8):
        reference = run(mmpretrain_pipeline(64), path, seed)
        fast = run(fast_pipeline(64, draft=False, backend='pillow'), path, seed)
        assert fast['inputs'].dtype == reference['inputs'].dtype
        assert fast['inputs'].shape == (3, 64, 64)
        assert fast['data_samples'].flip == reference['data_samples'].flip
        assert (fast['inputs'] == reference['inputs']).all(), seed


def test_torch_resize_close_to_pillow(tmp_path):
    """The default resize (torch's antialiased uint8 kernel) against mmpretrain's pillow
    resize of the same crop."""
    path = photo(tmp_path)
    for seed in range(4):
        reference = run(mmpretrain_pipeline(64), path, seed)['inputs'].float()
        fast = run(fast_pipeline(64, draft=False), path, seed)['inputs'].float()
        assert (fast - reference).abs().mean() < 1.0
        assert (fast - reference).abs().max() <= 16


def test_crop_box_statistics_match_mmpretrain(tmp_path):
    """Independent seeds: area share, log aspect ratio, box centre and flip rate have the
    same distribution as the boxes mmpretrain's own transform cuts (mmcv.imcrop's)."""
    path = photo(tmp_path, size=(96, 72))
    n = 400
    reference_boxes, flips = [], {'reference': [], 'fast': []}
    imcrop = processing.mmcv.imcrop

    def record(img, bboxes, **kwargs):
        reference_boxes.append(np.asarray(bboxes, float))
        return imcrop(img, bboxes, **kwargs)

    reference_pipeline, fast_loader = build(mmpretrain_pipeline(16)), build(fast_pipeline(16)[:2])
    with mock.patch.object(processing.mmcv, 'imcrop', record):
        for seed in range(n):
            flips['reference'].append(run(reference_pipeline, path, seed)
                                      ['data_samples'].flip)
    fast_boxes = []
    for seed in range(n, 2 * n):
        packed = run(fast_loader, path, seed)
        top, left, height, width = packed['crop_box']
        fast_boxes.append(np.array([left, top, left + width - 1, top + height - 1], float))
        flips['fast'].append(packed['flip'])

    def stats(boxes):
        x1, y1, x2, y2 = np.stack(boxes).T
        w, h = x2 - x1 + 1, y2 - y1 + 1
        return dict(area=w * h / (96 * 72), log_ratio=np.log(w / h), cx=(x1 + x2) / 2 / 96,
                    cy=(y1 + y2) / 2 / 72)

    reference, fast = stats(reference_boxes), stats(fast_boxes)
    for key in reference:  # means within 4 standard errors, quartiles within 0.06
        a, b = reference[key], fast[key]
        error = np.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * error, key
        assert np.abs(np.quantile(a, [.25, .5, .75]) - np.quantile(b, [.25, .5, .75])).max() \
            < 0.06, key
    for name, drawn in flips.items():
        assert abs(np.mean(drawn) - 0.5) < 4 * 0.5 / np.sqrt(n), name


def test_draft_scale():
    assert draft_scale((480, 640), (224, 224)) == 2
    assert draft_scale((447, 640), (224, 224)) == 1
    assert draft_scale((1800, 1800), (224, 224)) == 8
    assert draft_scale((900, 1000), (224, 224)) == 4
    assert draft_scale((100, 300), (224, 224)) == 1  # enlarged


@needs_coco
@pytest.mark.parametrize('decoder', ['simplejpeg', 'pil'])
def test_reduced_decode_of_real_photos_is_close_to_full_size(monkeypatch, decoder):
    """COCO photos decoded at 1/2 size (the crop keeps >= 224 px): the same box, and
    pixels within a few levels of the full-size decode."""
    if decoder == 'pil':
        monkeypatch.setattr(fast_rrc, 'simplejpeg', None)
    elif fast_rrc.simplejpeg is None:
        pytest.skip('simplejpeg is not installed')
    crops = []

    def record(pixels, size, interpolation):
        crops.append(pixels.shape[:2])
        return torch_resize(pixels, size, interpolation)

    pipeline = [dict(type='LoadRandomResizedCrop', scale=224, crop_ratio_range=(0.9, 1.0),
                     interpolation='bicubic')]
    for seed, path in enumerate(COCO[:4]):
        full = run([dict(pipeline[0], draft=False)], path, seed)
        with mock.patch.object(fast_rrc, 'torch_resize', record):
            reduced = run(pipeline, path, seed)
        top, left, height, width = reduced['crop_box']
        assert reduced['crop_box'] == full['crop_box']
        if min(height, width) >= 448:  # decoded at half size
            assert abs(crops[-1][0] - height / 2) <= 1 and abs(crops[-1][1] - width / 2) <= 1
        difference = np.abs(reduced['img'].astype(float) - full['img'].astype(float))
        # a crop edge moves by up to one full-size pixel (to the nearest reduced pixel)
        assert difference.mean() < 5.0, (path, difference.mean())
    assert any(min(crop) >= 224 and min(crop) < 448 for crop in crops)


@needs_coco
def test_pillow_resize_of_a_reduced_decode_is_close_to_full_size():
    """backend='pillow' with draft: the box is resized from the 1/2-size decode (in reduced
    units), within a few levels of the full-size decode's pillow resize."""
    scales = []
    resize = fast_rrc.LoadRandomResizedCrop._pillow_resize

    def record(self, image, crop_box, scale):
        scales.append(scale)
        return resize(self, image, crop_box, scale)

    pipeline = [dict(type='LoadRandomResizedCrop', scale=224, crop_ratio_range=(0.9, 1.0),
                     interpolation='bicubic', backend='pillow')]
    for seed, path in enumerate(COCO[:4]):
        full = run([dict(pipeline[0], draft=False)], path, seed)
        with mock.patch.object(fast_rrc.LoadRandomResizedCrop, '_pillow_resize', record):
            reduced = run(pipeline, path, seed)
        assert reduced['crop_box'] == full['crop_box']
        difference = np.abs(reduced['img'].astype(float) - full['img'].astype(float))
        assert difference.mean() < 5.0, (path, difference.mean())
    assert 2 in scales


@needs_coco
@pytest.mark.parametrize('decoder', ['simplejpeg', 'pil'])
def test_close_to_the_configs_cv2_decode(monkeypatch, decoder):
    """Against mmcv's default decoder (cv2), the paper config's loader, with either JPEG
    decoder (simplejpeg decodes BGR, PIL RGB): the same channel order."""
    if decoder == 'pil':
        monkeypatch.setattr(fast_rrc, 'simplejpeg', None)
    elif fast_rrc.simplejpeg is None:
        pytest.skip('simplejpeg is not installed')
    for seed, path in enumerate(COCO[:4]):
        reference = run(mmpretrain_pipeline(224, decoder='cv2'), path, seed)
        fast = run(fast_pipeline(224), path, seed)
        difference = (fast['inputs'].float() - reference['inputs'].float()).abs()
        assert difference.mean() < 3.0, (path, difference.mean())


def test_grayscale_and_exif_rotation_as_mmcv(tmp_path):
    """A grayscale or CMYK JPEG gives 3 channels; an EXIF-rotated one is cropped upright, as
    mmcv's cv2 loader gives it."""
    gray = tmp_path / 'gray.jpg'
    Image.fromarray(np.tile(np.arange(80, dtype=np.uint8), (60, 1))).save(gray)
    cmyk = tmp_path / 'cmyk.jpg'
    Image.open(photo(tmp_path)).convert('CMYK').save(cmyk)
    for path in (gray, cmyk):
        assert run(fast_pipeline(32), path, 0)['inputs'].shape == (3, 32, 32)
    rotated = tmp_path / 'rotated.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.open(photo(tmp_path)).save(rotated, exif=exif)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        loaded = Compose([dict(type='LoadImageFromFile')])(dict(img_path=str(rotated)))
    packed = run(fast_pipeline(32)[:1], rotated, 0)
    assert loaded['img'].shape[:2] == packed['ori_shape'] == (160, 120)


def test_undecodable_file_is_named(tmp_path):
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg')
    with pytest.raises(OSError, match='broken.jpg'):
        run(fast_pipeline(32), broken, 0)
    truncated = tmp_path / 'truncated.jpg'
    truncated.write_bytes(photo(tmp_path).read_bytes()[:300])
    with pytest.raises(OSError, match='truncated.jpg'):
        run(fast_pipeline(32), truncated, 0)


def test_rejects_unknown_backend_interpolation_and_flip_prob():
    from hgkd_mm.datasets.fast_rrc import LoadRandomResizedCrop
    with pytest.raises(ValueError, match="backend must be 'torch' or 'pillow'"):
        LoadRandomResizedCrop(scale=32, backend='cv2')
    with pytest.raises(ValueError, match='interpolation'):
        LoadRandomResizedCrop(scale=32, interpolation='lanczos')
    with pytest.raises(ValueError, match=r'flip_prob must be in \[0, 1\], got 1.5'):
        LoadRandomResizedCrop(scale=32, flip_prob=1.5)
    with pytest.raises(ValueError, match=r'flip_prob must be in \[0, 1\], got 1 \(a float'):
        LoadRandomResizedCrop(scale=32, flip_prob=1)  # an int, as RandomFlip refuses it


@pytest.mark.parametrize('prob', [0.5, 0.25, 0.9, 1.0])
def test_flip_prob_draws_the_flips_of_random_flip(tmp_path, prob):
    """flip_prob draws what RandomFlip(prob) after the loader draws, seed by seed, and
    leaves numpy's RNG where RandomFlip leaves it."""
    path = photo(tmp_path)
    loader = dict(type='LoadRandomResizedCrop', scale=32, **dict(CROP, backend='torch'))
    fused = build([dict(loader, flip_prob=prob), dict(type='PackInputs')])
    apart = build([loader, dict(type='RandomFlip', prob=prob), dict(type='PackInputs')])
    flips = []
    for seed in range(300):
        ours = run(fused, path, seed)
        after_ours = np.random.random_sample()
        theirs = run(apart, path, seed)
        assert np.random.random_sample() == after_ours  # the same draws consumed
        assert torch.equal(ours['inputs'], theirs['inputs']), seed
        assert ours['data_samples'].flip == theirs['data_samples'].flip
        assert ours['data_samples'].flip_direction == theirs['data_samples'].flip_direction
        flips.append(ours['data_samples'].flip)
    assert prob == 1.0 or 0 < sum(flips) < len(flips)


@pytest.mark.skipif(not os.path.isdir('../shared/data'), reason='needs ../shared/data')
def test_paper_config_uses_it():
    from mmengine.config import Config
    cfg = Config.fromfile('configs/pretrain/hgkd_r50.py')
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == ['LoadRandomResizedCrop', 'PackInputs']
    assert pipeline[0]['flip_prob'] == 0.5
