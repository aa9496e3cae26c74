"""Fixtures built once per test run: H-GKD checkpoints (a short tools/train.py run, an
in-process one) and their dense conversions, shared by the downstream tests."""
import pytest

from downstream_setup import convert, short_hgkd_run, train_and_save_hgkd


@pytest.fixture(scope='session')
def hgkd_r50(tmp_path_factory):
    """An H-GKD ResNet-50 checkpoint from 2 iterations of tools/train.py."""
    return short_hgkd_run(tmp_path_factory.mktemp('hgkd_r50'), depth=50)


@pytest.fixture(scope='session')
def hgkd_r18(tmp_path_factory):
    """An H-GKD ResNet-18 checkpoint from 2 steps of ``model.loss`` in this process."""
    return train_and_save_hgkd(18, tmp_path_factory.mktemp('hgkd_r18') / 'hgkd_r18.pth')


@pytest.fixture(scope='session')
def dense_r50(hgkd_r50):
    return convert(hgkd_r50, hgkd_r50.parent / 'resnet50_dense.pth')


@pytest.fixture(scope='session')
def dense_r18(hgkd_r18):
    return convert(hgkd_r18, hgkd_r18.parent / 'resnet18_dense.pth')
