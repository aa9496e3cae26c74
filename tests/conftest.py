"""Fixtures shared by the test folders, each built once per test run on first use; what
they are built from is in helpers.py."""
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(2)

from helpers import (EPOCHS_2, convert, make_image_folder, run_tool,  # noqa: E402
                     short_hgkd_run, train_and_save_hgkd, write_cls_config)


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a long sweep, run only when selected (-m slow)')


def pytest_collection_modifyitems(config, items):
    if 'slow' in (config.getoption('markexpr') or ''):
        return
    skip = pytest.mark.skip(reason='a long sweep: run it with -m slow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> Path:
    """Two classes of four random 32x32 images."""
    return make_image_folder(tmp_path_factory.mktemp('data') / 'images')


@pytest.fixture(scope='session')
def trained_2_epochs(tmp_path_factory, image_folder) -> Path:
    """Work dir of an uninterrupted 2-epoch single-process CPU run of the tiny classifier."""
    tmp = tmp_path_factory.mktemp('run')
    config = write_cls_config(tmp / 'tiny_cls.py', image_folder, EPOCHS_2)
    run_tool(['tools/train.py', config, '--work-dir', tmp / 'work'], check=True)
    return tmp / 'work'


@pytest.fixture(scope='session')
def hgkd_r50(tmp_path_factory) -> Path:
    """An H-GKD ResNet-50 checkpoint from 2 iterations of tools/train.py."""
    return short_hgkd_run(tmp_path_factory.mktemp('hgkd_r50'), depth=50)


@pytest.fixture(scope='session')
def hgkd_r18(tmp_path_factory) -> Path:
    """An H-GKD ResNet-18 checkpoint from 2 steps of ``model.loss`` in this process."""
    return train_and_save_hgkd(18, tmp_path_factory.mktemp('hgkd_r18') / 'hgkd_r18.pth')


@pytest.fixture(scope='session')
def dense_r50(hgkd_r50) -> Path:
    return convert(hgkd_r50, hgkd_r50.parent / 'resnet50_dense.pth')


@pytest.fixture(scope='session')
def dense_r18(hgkd_r18) -> Path:
    return convert(hgkd_r18, hgkd_r18.parent / 'resnet18_dense.pth')
