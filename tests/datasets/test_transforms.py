"""An unreadable image in the dataset stops with an error that names the file."""
import numpy as np
import pytest
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope
from PIL import Image

from mmpretrain.datasets import CustomDataset

import hgkd_mm  # noqa: F401


def make_folder(root):
    (root / 'cls').mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(root / 'cls' / f'ok{i}.jpg')
    (root / 'cls' / 'broken.jpg').write_bytes(b'not a jpeg')


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_unreadable_image_names_the_file(tmp_path, backend):
    make_folder(tmp_path)
    pipeline = [dict(type='LoadImageOrRaise', imdecode_backend=backend),
                dict(type='RandomResizedCrop', scale=32), dict(type='PackInputs')]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = CustomDataset(data_root=str(tmp_path), with_label=False, pipeline=pipeline)
        paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
        broken = paths.index(str(tmp_path / 'cls' / 'broken.jpg'))
        good = (broken + 1) % len(paths)
        assert dataset[good]['inputs'].shape == (3, 32, 32)
        with pytest.raises(OSError, match='broken.jpg'):
            dataset[broken]
