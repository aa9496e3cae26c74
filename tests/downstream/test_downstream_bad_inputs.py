"""Wrong inputs to the downstream configs stop tools/train.py with an error naming the file:
a missing checkpoint, a checkpoint of another depth, a dataset without annotations."""
import shutil
from pathlib import Path

import pytest
import torch
from mmdet.models.backbones import ResNet as DetResNet
from mmpretrain.models.backbones import ResNet

from downstream_setup import tiny_det_config, tool_log
from helpers import DATA_ABS, run_tool

from hgkd_mm.utils.pretrained_check import (PretrainedMismatchError, check_pretrained,
                                            pretrained_init_cfgs)


def train_det(tmp_path: Path, checkpoint: Path, **config_kwargs):
    config = tiny_det_config(tmp_path / 'det.py', checkpoint, **config_kwargs)
    return run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'work'], timeout=900)


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = tmp_path / 'no_such_dense.pth'
    result = train_det(tmp_path, missing)
    assert result.returncode != 0
    assert f'{missing} can not be found' in tool_log(result)  # mmengine's FileNotFoundError


def test_resnet18_weights_in_the_r50_config_name_the_file(tmp_path, dense_r18):
    result = train_det(tmp_path, dense_r18)
    log = tool_log(result)
    assert result.returncode != 0
    assert 'PretrainedMismatchError' in log
    assert f'Pretrained checkpoint {dense_r18} (prefix=\'backbone.\') does not match' in log
    assert 'Iter(train)' not in log  # stopped before the first iteration


def test_dataset_without_annotation_file_names_it(tmp_path, dense_r50):
    data_root = tmp_path / 'coco'
    for split in ('train2017', 'val2017'):
        shutil.copytree(DATA_ABS / 'coco-tiny' / split, data_root / split)
    (data_root / 'annotations').mkdir()
    result = train_det(tmp_path, dense_r50, data_root=f'{data_root}/')
    log = tool_log(result)
    assert result.returncode != 0
    assert 'FileNotFoundError' in log
    assert str(data_root / 'annotations/instances_train2017.json') in log
    assert 'COCO 2017 is expected under data/coco/' in log  # the config's data_hint


def test_check_pretrained_in_process(dense_r18, dense_r50):
    resnet50 = ResNet(50)
    assert check_pretrained(resnet50, str(dense_r50), 'backbone.') == len(resnet50.state_dict())
    assert check_pretrained(DetResNet(50), str(dense_r50), 'backbone.') > 0
    with pytest.raises(PretrainedMismatchError, match=str(dense_r18)) as error:
        check_pretrained(resnet50, str(dense_r18), 'backbone.', module_name='backbone')
    assert 'missing: layer1.0.conv3.weight' in str(error.value)
    assert 'shape mismatch: layer1.0.conv1.weight' in str(error.value)


def test_files_without_num_batches_tracked_pass(tmp_path, dense_r50):
    """Older torchvision-style files lack BN's counters; mmengine loads them without a word."""
    loaded = torch.load(dense_r50, weights_only=True)
    state_dict = {k: v for k, v in loaded['state_dict'].items()
                  if not k.endswith('num_batches_tracked')}
    assert len(state_dict) < len(loaded['state_dict'])
    path = tmp_path / 'no_counters.pth'
    torch.save({'state_dict': state_dict}, path)
    assert check_pretrained(ResNet(50), str(path), 'backbone.') == len(ResNet(50).state_dict())
    del state_dict['backbone.layer1.0.bn1.running_mean']
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(PretrainedMismatchError, match='missing: layer1.0.bn1.running_mean'):
        check_pretrained(ResNet(50), str(path), 'backbone.')


def test_unexpected_keys_are_an_error(tmp_path, dense_r50):
    extra = torch.load(dense_r50, weights_only=True)
    extra['state_dict']['backbone.fc.weight'] = torch.zeros(3, 3)
    path = tmp_path / 'extra.pth'
    torch.save(extra, path)
    with pytest.raises(PretrainedMismatchError, match='unexpected: fc.weight'):
        check_pretrained(ResNet(50), str(path), 'backbone.')


def test_pretrained_init_cfgs_finds_nested_modules(dense_r50):
    init_cfg = dict(type='Pretrained', checkpoint=str(dense_r50), prefix='backbone.')
    model = torch.nn.Sequential()
    model.add_module('backbone', ResNet(50, init_cfg=init_cfg))
    found = list(pretrained_init_cfgs(model))
    assert [(name, cfg['checkpoint']) for name, _, cfg in found] == [('backbone', str(dense_r50))]
