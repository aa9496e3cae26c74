"""CPU launch helpers: SyncBN replacement, DDP wrapper cfg, gloo process group."""
import logging
import os

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import MMLogger

from hgkd_mm.utils import (close_process_group, cpu_model_wrapper_cfg, replace_cuda_sync_bn,
                           setup_launcher)


class ListHandler(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def norm_config() -> Config:
    return Config(dict(
        norm_cfg=dict(type='SyncBN', requires_grad=True),  # a top-level variable (mmseg)
        model=dict(
            backbone=dict(type='ResNet', norm_cfg=dict(type='SyncBN', requires_grad=True)),
            student=dict(norm_cfg=dict(type='MaskedSyncBatchNorm2d')),
            neck=dict(norm_cfg=dict(type='MMSyncBN', stats_mode='N')),
            heads=[dict(norm_cfg=dict(type='nn.SyncBatchNorm')), dict(norm_cfg=dict(type='BN'))]),
        sync_bn='torch'))


def test_cuda_sync_bn_becomes_bn_and_masked_norm_stays():
    cfg = norm_config()
    handler = ListHandler()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        replaced = replace_cuda_sync_bn(cfg)
    finally:
        logger.removeHandler(handler)
    assert cfg.model.backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert cfg.norm_cfg.type == 'BN'
    assert cfg.model.neck.norm_cfg == dict(type='BN')  # mmcv-only stats_mode dropped
    assert cfg.model.heads[0].norm_cfg.type == 'BN'
    assert cfg.model.student.norm_cfg.type == 'MaskedSyncBatchNorm2d'
    assert cfg.sync_bn is None
    assert replaced == ['norm_cfg.type=SyncBN', 'model.backbone.norm_cfg.type=SyncBN',
                        'model.neck.norm_cfg.type=MMSyncBN',
                        'model.heads.0.norm_cfg.type=SyncBatchNorm', "sync_bn='torch'"]
    [warning] = handler.messages
    assert all(key in warning for key in replaced)
    assert 'MaskedSyncBatchNorm2d' not in warning


def test_model_wrapper_cfg_has_no_device_ids():
    default = cpu_model_wrapper_cfg(Config(dict(find_unused_parameters=True)))
    assert default == dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                           find_unused_parameters=True, device_ids=None)
    custom = cpu_model_wrapper_cfg(Config(dict(
        model_wrapper_cfg=dict(type='MMSeparateDistributedDataParallel',
                               find_unused_parameters=True))))
    assert custom.device_ids is None and custom.find_unused_parameters


def test_launcher_none_leaves_the_config_alone():
    cfg = norm_config()
    setup_launcher(cfg, 'none')
    assert cfg.launcher == 'none'
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'  # the Runner reverts it itself
    assert 'model_wrapper_cfg' not in cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only path')
def test_pytorch_launcher_on_cpu_inits_gloo(monkeypatch):
    port = 29400 + os.getpid() % 500
    for key, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    cfg = norm_config()
    cfg.env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=60))
    setup_launcher(cfg, 'pytorch')
    try:
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg.device_ids is None
        assert cfg.model.backbone.norm_cfg.type == 'BN'
    finally:
        close_process_group()  # what tools/train.py and tools/test.py do at the end
    assert not dist.is_initialized()
    close_process_group()  # no group: nothing to do


@pytest.mark.parametrize('student', ['HGKDSparseResNet', 'HGKDSparseResNetV1c',
                                     'HGKDSparseMobileNetV2'])
def test_sparse_resnet_sync_bn_alias_stays(student):
    """The students turn norm_cfg SyncBN into MaskedSyncBatchNorm2d, which all-reduces on
    gloo; a dense neck's SyncBN beside it still becomes BN."""
    cfg = Config(dict(model=dict(
        backbone=dict(type=student, depth=18, norm_cfg=dict(type='SyncBN')),
        neck=dict(type='HGKDUNetDecoder', norm_cfg=dict(type='SyncBN')))))
    assert replace_cuda_sync_bn(cfg) == ['model.neck.norm_cfg.type=SyncBN']
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
