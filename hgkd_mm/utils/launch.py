"""Make mmengine's launchers (pytorch, slurm, mpi) work on machines without CUDA.

mmengine assumes a GPU per process: its ``init_dist`` calls ``torch.cuda.set_device``,
``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]`` and torch's/mmcv's
SyncBatchNorm need CUDA. Without CUDA, :func:`setup_launcher` switches the config to
gloo and CPU DDP and initialises the process group itself, which the Runner then
reuses (it skips ``init_dist`` when a group exists).
"""
from __future__ import annotations

import datetime
import logging
import os
import subprocess
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
# torch.nn.SyncBatchNorm and mmcv.ops.SyncBatchNorm: CUDA only. Matched by exact
# name, so norms that all-reduce by themselves on gloo (MaskedSyncBatchNorm2d) stay.
CUDA_SYNC_BN_TYPES = ('SyncBN', 'SyncBatchNorm', 'MMSyncBN')
# modules whose norm_cfg 'SyncBN' means their own gloo-safe masked SyncBN
GLOO_SYNC_NORM_OWNERS = ('HGKDSparseResNet', 'HGKDSparseResNetMasked', 'HGKDSparseResNetV1c',
                         'HGKDSparseResNetV1d', 'HGKDSparseResNeXt', 'HGKDSparseMobileNetV2',
                         'HGKDSparseConvNeXt')


def setup_launcher(cfg: Config, launcher: str) -> None:
    """Set ``cfg.launcher``; without CUDA, prepare ``cfg`` and the process group for gloo.

    Call before ``Runner.from_cfg(cfg)``. With CUDA, or with ``launcher='none'``
    (the Runner reverts SyncBN layers itself when not distributed), only
    ``cfg.launcher`` is set.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    dist_cfg.backend = 'gloo'
    init_cpu_process_group(launcher, dist_cfg.get('timeout'))
    cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg)
    replace_cuda_sync_bn(cfg)


def init_cpu_process_group(launcher: str, timeout: float | None = None) -> None:
    """Initialise a gloo process group from the launcher's environment variables."""
    if dist.is_initialized():
        return
    for key, value in _launcher_env(launcher).items():
        os.environ.setdefault(key, value)
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend='gloo', init_method='env://', **kwargs)


def close_process_group() -> None:
    """Destroy the default process group, if any, before the interpreter exits.

    Without it, gloo's worker threads can outlive the interpreter's teardown and abort
    the process ("terminate called without an active exception", SIGABRT) after a
    successful run, which fails the launcher (seen with ``dist_train.sh`` on 2 CPU
    processes). A barrier first: rank 0 hosts the store the others use, so no rank may
    leave while another still tears down."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _launcher_env(launcher: str) -> dict[str, str]:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` as mmengine derives them."""
    env = os.environ
    if launcher == 'pytorch':  # torchrun sets them all
        return {}
    port = env.get('MASTER_PORT', '29500')  # as mmengine: a port already set is kept
    if launcher == 'slurm':
        first_node = subprocess.getoutput(
            f'scontrol show hostname {env["SLURM_NODELIST"]} | head -n1')
        return dict(RANK=env['SLURM_PROCID'], WORLD_SIZE=env['SLURM_NTASKS'],
                    LOCAL_RANK=env.get('SLURM_LOCALID', '0'), MASTER_ADDR=first_node,
                    MASTER_PORT=port)
    if launcher == 'mpi':
        if 'MASTER_ADDR' not in env:
            raise KeyError('The environment variable MASTER_ADDR is not set')
        return dict(RANK=env['OMPI_COMM_WORLD_RANK'], WORLD_SIZE=env['OMPI_COMM_WORLD_SIZE'],
                    LOCAL_RANK=env['OMPI_COMM_WORLD_LOCAL_RANK'], MASTER_PORT=port)
    raise ValueError(f'No process group for launcher {launcher!r}')


def cpu_model_wrapper_cfg(cfg: Config) -> ConfigDict:
    """``cfg.model_wrapper_cfg`` with ``device_ids=None``, which CPU DDP requires.

    Keeps mmengine's defaults when the config sets no wrapper
    (``broadcast_buffers=False``, ``find_unused_parameters`` from the config).
    """
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper = ConfigDict(wrapper)
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper_type = wrapper['type']
    if isinstance(wrapper_type, str):
        wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
    # MMSeparateDistributedDataParallel passes its kwargs on to the DDP it builds.
    if isinstance(wrapper_type, type) and (
            issubclass(wrapper_type, DistributedDataParallel)
            or wrapper_type.__name__ == 'MMSeparateDistributedDataParallel'):
        wrapper['device_ids'] = None
    return wrapper


def replace_cuda_sync_bn(cfg: Config) -> list[str]:
    """Replace CUDA-only SyncBN norm types in ``cfg`` with ``BN``; log what changed.

    ``Masked*`` norms (their own all-reduce, gloo-safe) are kept. A
    ``cfg.sync_bn`` request (the Runner would convert BN to SyncBN) is dropped.
    Returns the replaced config keys.
    """
    replaced: list[str] = []
    for key in list(cfg.keys()):
        _replace_in(cfg[key], key, replaced)
    if cfg.get('sync_bn'):
        replaced.append(f'sync_bn={cfg.sync_bn!r}')
        cfg.sync_bn = None
    if replaced:
        print_log(
            'No CUDA: torch/mmcv SyncBatchNorm needs a GPU, so these norm layers '
            'become BN (per-process statistics): ' + ', '.join(replaced),
            logger='current', level=logging.WARNING)
    return replaced


def _replace_in(node: Any, key: str, replaced: list[str]) -> None:
    if isinstance(node, dict):
        norm_type = node.get('type')
        name = norm_type if isinstance(norm_type, str) else getattr(norm_type, '__name__', '')
        name = name.rsplit('.', 1)[-1]  # 'mmdet.SyncBN', 'nn.SyncBatchNorm'
        if name in CUDA_SYNC_BN_TYPES:
            replaced.append(f'{key}.type={name}')
            node['type'] = 'BN'
            for mmcv_only in ('group', 'stats_mode', 'process_group'):
                node.pop(mmcv_only, None)
        for child_key, child in node.items():
            if name in GLOO_SYNC_NORM_OWNERS and child_key == 'norm_cfg':
                continue  # turned into MaskedSyncBatchNorm2d, which all-reduces on gloo
            _replace_in(child, f'{key}.{child_key}', replaced)
    elif isinstance(node, (list, tuple)):
        for i, child in enumerate(node):
            _replace_in(child, f'{key}.{i}', replaced)
