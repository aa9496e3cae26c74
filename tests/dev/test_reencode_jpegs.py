"""dev/reencode_jpegs.py: the same photos in one JPEG encoding, upright, originals kept."""
import importlib.util
import os

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from helpers import ROOT


@pytest.fixture(scope='module')
def tool():
    """dev/ is not a package: the script loaded by its path."""
    spec = importlib.util.spec_from_file_location(
        'dev_reencode_jpegs', os.path.join(ROOT, 'dev', 'reencode_jpegs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reencodes_each_image_upright(tool, tmp_path):
    src = tmp_path / 'src'
    (src / 'a').mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(src / 'a' / 'x.jpg', quality=95, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying down: shown turned 90 degrees clockwise
    Image.fromarray(pixels).save(src / 'y.jpg', exif=exif)
    Image.fromarray(pixels).save(src / 'z.png')
    before = (src / 'a' / 'x.jpg').read_bytes()
    tool.main([str(src), str(tmp_path / 'dst'), '--quality', '80', '--subsampling', '420'])
    assert sorted(os.listdir(tmp_path / 'dst')) == ['a_x.jpg', 'y.jpg', 'z.jpg']
    assert (src / 'a' / 'x.jpg').read_bytes() == before
    for name in ('a_x.jpg', 'y.jpg', 'z.jpg'):
        with Image.open(tmp_path / 'dst' / name) as image:
            assert image.format == 'JPEG' and JpegImagePlugin.get_sampling(image) == 2
            assert image.getexif().get(0x0112, 1) == 1
            assert image.size == ((30, 50) if name == 'y.jpg' else (50, 30))


@pytest.mark.parametrize('argv, message', [
    (['--quality', '0'], '--quality must be in 1-95'),
    (['--subsampling', '411'], 'invalid choice'),
])
def test_rejects_bad_options(tool, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), str(tmp_path / 'dst')] + argv)
    assert message in capsys.readouterr().err


def test_names_src_when_it_has_no_images(tool, tmp_path):
    with pytest.raises(SystemExit, match=f'^src {tmp_path / "missing"}: not a folder$'):
        tool.main([str(tmp_path / 'missing'), str(tmp_path / 'dst')])
    with pytest.raises(SystemExit, match=f'^src {tmp_path}: no .* images in it$'):
        tool.main([str(tmp_path), str(tmp_path / 'dst')])
    assert not (tmp_path / 'dst').exists()


def test_refuses_two_images_with_one_name(tool, tmp_path, capsys):
    Image.new('RGB', (8, 8)).save(tmp_path / 'x.jpg')
    Image.new('RGB', (8, 8)).save(tmp_path / 'x.png')
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), str(tmp_path / 'dst')])
    assert 'x.png and x.jpg would both be written to x.jpg' in capsys.readouterr().err
    assert not (tmp_path / 'dst').exists()


def test_refuses_to_write_over_the_originals(tool, tmp_path, capsys):
    Image.new('RGB', (8, 8)).save(tmp_path / 'x.jpg')
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), str(tmp_path)])
    assert 'dst must not be src' in capsys.readouterr().err
