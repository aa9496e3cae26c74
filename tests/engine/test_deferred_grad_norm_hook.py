"""DeferredGradNormHook: the optimizer step has no host sync and the log gets the same
gradient norm; the paper config's bf16 AmpOptimWrapper runs no GradScaler."""
import copy
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper

from hgkd_mm.engine import DeferredGradNormHook, ForeachLamb

from helpers import ROOT, RecordOps


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def step(wrapper, model, hook=None):
    """One update as mmengine's train_step does it; the ops of the step, the logged norm."""
    hub = wrapper.message_hub = MessageHub(f'hub_{id(wrapper)}')
    runner = SimpleNamespace(optim_wrapper=wrapper)
    if hook:
        hook.before_train(runner)
    loss = model(torch.linspace(-3, 3, 24).view(4, 6)).square().sum() * 100
    with RecordOps() as record:
        wrapper.update_params(loss)
    if hook:
        assert 'train/grad_norm' not in hub.log_scalars  # not logged inside the step
        hook.after_train_iter(runner, 0)
    return record.ops, hub.get_scalar('train/grad_norm').current()


def test_same_update_and_norm_without_a_sync():
    reference_model, model = net(), net()
    reference = OptimWrapper(ForeachLamb(reference_model.parameters(), lr=0.1),
                             clip_grad=dict(max_norm=1.0))
    ops, reference_norm = step(reference, reference_model)
    assert 'aten._local_scalar_dense' in ops  # mmengine's float(grad_norm): the sync
    wrapper = OptimWrapper(ForeachLamb(model.parameters(), lr=0.1), clip_grad=dict(max_norm=1.0))
    hook = DeferredGradNormHook()
    hook.before_train(SimpleNamespace(optim_wrapper=wrapper))  # a second train() wraps once
    ops, norm = step(wrapper, model, hook)
    assert 'aten._local_scalar_dense' not in ops and 'aten.linalg_vector_norm' in ops
    assert norm == reference_norm > 1.0  # clipped
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_wrappers_without_norm_clipping_are_left_alone():
    for clip_grad in (None, dict(type='value', clip_value=0.1)):
        model = net()
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                               clip_grad=copy.deepcopy(clip_grad))
        clip_func = getattr(wrapper, 'clip_func', None)
        DeferredGradNormHook().before_train(SimpleNamespace(optim_wrapper=wrapper))
        assert getattr(wrapper, 'clip_func', None) is clip_func


def amp_wrapper(model, loss_scale):
    """mmengine's AmpOptimWrapper as the paper config builds it (CUDA faked: it asserts a GPU)."""
    with mock.patch.object(amp_optimizer_wrapper, 'is_cuda_available', return_value=True), \
            mock.patch('torch.cuda.is_available', return_value=True):
        return AmpOptimWrapper(optimizer=ForeachLamb(model.parameters(), lr=0.1), dtype='bfloat16',
                               loss_scale=loss_scale, clip_grad=dict(max_norm=1.0))


def test_paper_config_step_has_no_sync():
    cfg = Config.fromfile(ROOT / 'configs' / 'pretrain' / 'hgkd_r50.py')
    assert dict(type='DeferredGradNormHook') in cfg.custom_hooks
    # mmengine's default, 'dynamic': a GradScaler unscales, checks for inf and reads it back
    model = net()
    ops, _ = step(amp_wrapper(model, 'dynamic'), model, DeferredGradNormHook())
    assert 'aten._amp_foreach_non_finite_check_and_unscale_' in ops
    assert 'aten._local_scalar_dense' in ops
    model = net()
    wrapper = amp_wrapper(model, cfg.optim_wrapper.loss_scale.to_dict())
    assert cfg.optim_wrapper.dtype == 'bfloat16' and not wrapper.loss_scaler.is_enabled()
    ops, _ = step(wrapper, model, DeferredGradNormHook())
    assert not [op for op in ops if op.startswith('aten._amp') or 'scalar' in op], ops


def test_each_wrapper_of_an_optim_wrapper_dict():
    from mmengine.optim import OptimWrapperDict
    model = net()
    clipped = OptimWrapper(torch.optim.SGD(model[0].parameters(), lr=0.1),
                           clip_grad=dict(max_norm=1.0))
    plain = OptimWrapper(torch.optim.SGD(model[2].parameters(), lr=0.1))
    DeferredGradNormHook().before_train(
        SimpleNamespace(optim_wrapper=OptimWrapperDict(first=clipped, second=plain)))
    assert clipped.clip_func is not torch.nn.utils.clip_grad_norm_
    assert not hasattr(plain, 'clip_func')
