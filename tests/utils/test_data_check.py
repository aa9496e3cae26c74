"""check_data_paths names the missing path and its config key."""
import pytest
from mmengine.config import Config

from hgkd_mm.utils import check_data_paths


def loader(dataset: dict) -> dict:
    return dict(batch_size=1, dataset=dataset)


@pytest.fixture
def root(tmp_path):
    (tmp_path / 'meta').mkdir()
    (tmp_path / 'meta' / 'train.txt').write_text('')
    (tmp_path / 'train').mkdir()
    return tmp_path


def check_raises(cfg: dict, path, key: str) -> str:
    with pytest.raises(FileNotFoundError) as error:
        check_data_paths(Config(cfg))
    message = str(error.value)
    assert str(path) in message and key in message, message
    return message


def test_existing_paths_pass(root):
    check_data_paths(Config(dict(
        train_dataloader=loader(dict(data_root=str(root), ann_file='meta/train.txt',
                                     data_prefix='train')),
        val_dataloader=None)))


def test_missing_data_root(tmp_path):
    missing = tmp_path / 'imagenet'
    check_raises(dict(train_dataloader=loader(dict(data_root=str(missing), data_prefix='train'))),
                 missing, 'train_dataloader.dataset.data_root')


def test_missing_ann_file_is_joined_to_data_root(root):
    check_raises(dict(val_dataloader=loader(dict(data_root=str(root), ann_file='meta/val.txt'))),
                 root / 'meta' / 'val.txt', 'val_dataloader.dataset.ann_file')


def test_missing_absolute_ann_file(root, tmp_path):
    ann_file = tmp_path / 'elsewhere' / 'ann.json'
    check_raises(dict(test_dataloader=loader(dict(data_root=str(root), ann_file=str(ann_file)))),
                 ann_file, 'test_dataloader.dataset.ann_file')


def test_missing_mmpretrain_string_prefix(root):
    check_raises(dict(val_dataloader=loader(dict(data_root=str(root), data_prefix='val'))),
                 root / 'val', 'val_dataloader.dataset.data_prefix')


def test_missing_mmpretrain_split_folder(root, tmp_path):
    """The paper config's ImageNet: ``split='train'`` reads ``data_root/train``."""
    check_data_paths(Config(dict(train_dataloader=loader(dict(data_root=str(root),
                                                               split='train')))))
    empty = tmp_path / 'empty_imagenet'
    empty.mkdir()
    check_raises(dict(train_dataloader=loader(dict(data_root=str(empty), split='train'))),
                 empty / 'train', 'train_dataloader.dataset.split')


def test_missing_mmdet_img_prefix_inside_repeat_dataset(root):
    (root / 'annotations').mkdir()
    (root / 'annotations' / 'train.json').write_text('{}')
    coco = dict(type='CocoDataset', data_root=str(root), ann_file='annotations/train.json',
                data_prefix=dict(img='train2017/'))
    check_raises(dict(train_dataloader=loader(dict(type='RepeatDataset', times=2, dataset=coco))),
                 root / 'train2017', 'train_dataloader.dataset.dataset.data_prefix.img')


def test_missing_mmseg_seg_maps_inside_concat_dataset(root):
    (root / 'images' / 'training').mkdir(parents=True)
    ade = dict(type='ADE20KDataset', data_root=str(root),
               data_prefix=dict(img_path='images/training',
                                seg_map_path='annotations/training'))
    check_raises(dict(train_dataloader=loader(dict(type='ConcatDataset', datasets=[ade]))),
                 root / 'annotations' / 'training',
                 'train_dataloader.dataset.datasets.0.data_prefix.seg_map_path')


def test_data_hint_is_appended(tmp_path):
    message = check_raises(
        dict(train_dataloader=loader(dict(data_root=str(tmp_path / 'in1k'))),
             data_hint='No ImageNet? Run the offline demo: make demo'),
        tmp_path / 'in1k', 'train_dataloader.dataset.data_root')
    assert message.endswith('No ImageNet? Run the offline demo: make demo')


def test_only_the_requested_dataloaders_are_checked(root, tmp_path):
    cfg = Config(dict(train_dataloader=loader(dict(data_root=str(root), data_prefix='train')),
                      test_dataloader=loader(dict(data_root=str(tmp_path / 'test-dev')))))
    check_data_paths(cfg, ('train_dataloader', 'val_dataloader'))
    with pytest.raises(FileNotFoundError, match='test-dev'):
        check_data_paths(cfg)
