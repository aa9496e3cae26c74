"""ForeachLamb gives mmpretrain's Lamb results (the reference) and shares its checkpoints."""
import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.engine.optimizers import Lamb

from hgkd_mm.engine import ForeachLamb


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 5)).double()


def _groups(model):
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [dict(params=decay), dict(params=no_decay, weight_decay=0.0)]


def _close(actual, expected):
    """Lamb accumulates the global gradient norm in float32 whatever the parameters'
    dtype: where that norm clips, the two differ by float32 rounding."""
    return (actual - expected).abs().max() <= 1e-6 * expected.abs().max()


def _train(model, optimizer, steps, scale):
    torch.manual_seed(1)
    for _ in range(steps):
        inputs = torch.randn(4, 3, 8, 8, dtype=torch.float64)
        (model(inputs).pow(2).sum() * scale).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize('options', [
    dict(),  # the config's setting: betas, weight decay, default max_grad_norm
    dict(trust_clip=True, always_adapt=True, max_grad_norm=1e3),
    dict(bias_correction=False, grad_averaging=False),
])
@pytest.mark.parametrize('scale', [1e-3, 10.0])  # global clipping inactive / active
def test_same_update_as_mmpretrain_lamb(options, scale):
    reference, model = _model(), _model()
    kwargs = dict(lr=0.05, betas=(0.9, 0.95), weight_decay=0.04, **options)
    _train(reference, Lamb(_groups(reference), **kwargs), 4, scale)
    _train(model, ForeachLamb(_groups(model), **kwargs), 4, scale)
    moved = False
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters()):
        assert _close(actual, expected), name
        moved |= not torch.equal(actual, _model().get_parameter(name))
    assert moved


def test_one_group_per_parameter_as_mmengine_builds_them():
    """paramwise_cfg gives a group per parameter; equal groups are updated together."""
    reference, model = _model(), _model()

    def per_parameter(net):
        return [dict(params=[p], weight_decay=0.0 if p.ndim <= 1 else 0.04,
                     lr=0.1 if name == '4.bias' else 0.05)
                for name, p in net.named_parameters()]

    lamb = Lamb(per_parameter(reference), lr=0.05)
    _train(reference, lamb, 3, 10.0)
    foreach = ForeachLamb(per_parameter(model), lr=0.05)
    _train(model, foreach, 3, 10.0)
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert _close(actual, expected)
    assert [g['step'] for g in foreach.param_groups] == [g['step'] for g in lamb.param_groups]


def test_betas_as_a_list():
    """torch's optimizers (and Lamb) accept betas as a list, e.g. from a JSON config."""
    reference, model = _model(), _model()
    _train(reference, Lamb(_groups(reference), lr=0.05, betas=[0.9, 0.95]), 2, 1.0)
    _train(model, ForeachLamb(_groups(model), lr=0.05, betas=[0.9, 0.95]), 2, 1.0)
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert _close(actual, expected)


def test_resumes_a_lamb_checkpoint():
    reference, model = _model(), _model()
    lamb = Lamb(_groups(reference), lr=0.05)
    _train(reference, lamb, 2, 1.0)
    model.load_state_dict(reference.state_dict())
    foreach = ForeachLamb(_groups(model), lr=0.05)
    foreach.load_state_dict(copy.deepcopy(lamb.state_dict()))
    _train(reference, lamb, 2, 1.0)
    _train(model, foreach, 2, 1.0)
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert _close(actual, expected)


def test_registered_for_configs():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import OPTIMIZERS
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # as configs set it
        optimizer = OPTIMIZERS.build(dict(type='ForeachLamb', params=_model().parameters()))
    assert isinstance(optimizer, ForeachLamb)
