"""The model's ``compile`` switch: eager on CPU by default, the compiled step equals eager,
and a compiler failure falls back to eager with a warning."""
import logging

import pytest
import torch

from hgkd_mm.models.algorithms import hgkd as hgkd_module

from test_hgkd import build


def step(model, inputs, seed=0):
    """Loss and student gradients of one step with a fixed mask."""
    model.train()
    torch.manual_seed(seed)
    loss = model.loss(inputs)['loss_feat']
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_auto_is_eager_on_cpu():
    model = build()
    step(model, torch.randn(2, 3, 64, 64))
    assert model._student_step == model.student_loss
    assert callable(model.compile)  # nn.Module.compile() is not shadowed by the option


@pytest.mark.parametrize('backend', ['masked', 'packed'])
def test_compiled_step_equals_eager(backend):
    inputs = torch.randn(2, 3, 64, 64)
    backbone = dict(type='HGKDSparseResNet', depth=18, backend=backend, drop_path_rate=0.2)
    eager_loss, eager_grads = step(build(compile=False, backbone=backbone), inputs)
    model = build(compile=dict(backend='aot_eager', fullgraph=True), backbone=backbone)
    loss, grads = step(model, inputs)
    assert model._student_step != model.student_loss  # the compiled function is in use
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


def test_compiled_teacher_equals_eager():
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, eager_grads = step(build(compile=False, compile_teacher=True), inputs)
    model = build(compile=dict(backend='aot_eager'), compile_teacher=True)
    keys = set(model.state_dict())
    loss, grads = step(model, inputs)
    assert model._teacher_step != model.teacher.forward  # the compiled teacher is in use
    assert set(model.state_dict()) == keys  # no compiled module among the submodules
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


def test_compiler_failure_falls_back_to_eager(monkeypatch):
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, _ = step(build(compile=False), inputs)
    model = build(compile=dict(backend='no_such_backend'))
    logged = []
    monkeypatch.setattr(hgkd_module, 'print_log',
                        lambda msg, logger=None, level=None: logged.append((msg, level)))
    loss, _ = step(model, inputs)
    assert len(logged) == 1 and logged[0][1] == logging.WARNING
    assert 'torch.compile of the H-GKD student failed' in logged[0][0]
    assert 'no_such_backend' in logged[0][0]
    assert model._student_step == model.student_loss
    assert torch.allclose(loss, eager_loss)


def test_teacher_compiler_failure_falls_back_to_eager(monkeypatch):
    model = build(compile=dict(backend='no_such_backend'), compile_teacher=True)
    logged = []
    monkeypatch.setattr(hgkd_module, 'print_log',
                        lambda msg, logger=None, level=None: logged.append(msg))
    step(model, torch.randn(2, 3, 64, 64))
    assert ['teacher' in msg for msg in logged] == [True, False]  # then the student's
    assert 'set model.compile_teacher=False' in logged[0]
    assert model._teacher_step == model.teacher.forward


@pytest.mark.parametrize('value', ['yes', 1.0, None])
def test_bad_compile_value(value):
    with pytest.raises(ValueError, match='compile must be'):
        build(compile=value)


def test_bad_compile_teacher_value():
    with pytest.raises(ValueError, match='compile_teacher must be'):
        build(compile_teacher='yes')
