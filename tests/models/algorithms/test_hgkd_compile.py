"""The model's ``compile`` switch: eager on CPU by default, the compiled step equals eager,
and a compiler failure falls back to eager with a warning."""
import logging

import pytest
import torch

from hgkd_mm.engine import compiled_step as step_module

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
    assert model.compiled_step.compiled_with is None  # eager
    assert callable(model.compile)  # nn.Module.compile() is not shadowed by the option


@pytest.mark.parametrize('backend, channels_last', [
    ('masked', False), ('packed', False), ('packed', True)])
def test_compiled_step_equals_eager(backend, channels_last):
    inputs = torch.randn(2, 3, 64, 64)
    backbone = dict(type='HGKDSparseResNet', depth=18, backend=backend, drop_path_rate=0.2)
    eager_loss, eager_grads = step(
        build(compile=False, backbone=backbone, channels_last=channels_last), inputs)
    model = build(compile=dict(backend='aot_eager', fullgraph=True), backbone=backbone,
                  channels_last=channels_last)
    loss, grads = step(model, inputs)
    assert model.compiled_step.compiled_with == dict(backend='aot_eager', fullgraph=True)
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize('channels_last', [False, True])  # True: the paper config's GPU default
def test_compiled_teacher_equals_eager(channels_last):
    """compile_teacher compiles teacher and student as one function, in one graph
    (fullgraph=True: no graph break between them), with the eager loss and gradients."""
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, eager_grads = step(build(compile=False, channels_last=channels_last), inputs)
    model = build(compile=dict(backend='aot_eager', fullgraph=True), compile_teacher=True,
                  channels_last=channels_last)
    keys = set(model.state_dict())
    loss, grads = step(model, inputs)
    assert model.compiled_step.teacher_inside and model.compiled_step.compiled_with
    assert set(model.state_dict()) == keys  # no compiled module among the submodules
    assert torch.allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    assert not any(name.startswith('target_generator') for name in grads)  # frozen
    for name, grad in grads.items():
        assert torch.allclose(grad, eager_grads[name], rtol=1e-4, atol=1e-6), name


def test_compiler_failure_falls_back_to_eager(monkeypatch):
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, _ = step(build(compile=False), inputs)
    model = build(compile=dict(backend='no_such_backend'))
    logged = []
    monkeypatch.setattr(step_module, 'print_log',
                        lambda msg, logger=None, level=None: logged.append((msg, level)))
    loss, _ = step(model, inputs)
    assert [level for _, level in logged] == [logging.WARNING, logging.INFO]
    assert 'torch.compile of the H-GKD student failed' in logged[0][0]
    assert 'no_such_backend' in logged[0][0]
    assert logged[1][0] == 'H-GKD student step: eager'  # what it trains with
    assert model.compiled_step.compiled_with is None
    assert torch.allclose(loss, eager_loss)


def test_teacher_compiler_failure_falls_back_to_eager(monkeypatch):
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, _ = step(build(compile=False), inputs)
    model = build(compile=dict(backend='no_such_backend'), compile_teacher=True)
    logged = []
    monkeypatch.setattr(step_module, 'print_log',
                        lambda msg, logger=None, level=None: logged.append(msg))
    loss, _ = step(model, inputs)
    assert len(logged) == 3
    assert 'of the H-GKD student and teacher failed, compiling the student alone' in logged[0]
    assert 'model.compile_teacher=False' in logged[0]
    assert 'of the H-GKD student failed, training eager instead' in logged[1]
    assert logged[2] == 'H-GKD student step: eager'
    assert model.compiled_step.compiled_with is None and not model.compiled_step.teacher_inside
    assert torch.allclose(loss, eager_loss)
    assert torch.allclose(step(model, inputs)[0], eager_loss)  # and the steps after


def test_student_alone_is_compiled_when_the_pair_fails(monkeypatch):
    """A teacher that does not compile (e.g. input_mode='masked' with fullgraph) leaves
    the student compiled, the teacher eager."""
    calls = []

    def fake_compile(function, **options):
        calls.append(function.__name__)
        if function.__name__ == 'teacher_and_student':
            raise RuntimeError('the teacher does not compile')
        return lambda *args: function(*args)

    monkeypatch.setattr(step_module.torch, 'compile', fake_compile)
    inputs = torch.randn(2, 3, 64, 64)
    eager_loss, _ = step(build(compile=False), inputs)
    model = build(compile=dict(fullgraph=True), compile_teacher=True)
    loss, _ = step(model, inputs)
    assert calls == ['teacher_and_student', 'student_loss']
    assert not model.compiled_step.teacher_inside
    assert model.compiled_step.compiled_with == dict(fullgraph=True)  # the compiled student
    assert torch.allclose(loss, eager_loss)
    assert torch.allclose(step(model, inputs)[0], eager_loss)


@pytest.mark.parametrize('compile', [dict(mdoe='reduce-overhead'), dict(backend='eager', x=1)])
def test_unknown_compile_arguments_are_refused(compile):
    with pytest.raises(ValueError, match='are not torch.compile arguments'):
        build(compile=compile)


@pytest.mark.parametrize('value', ['yes', 1.0, None])
def test_bad_compile_value(value):
    with pytest.raises(ValueError, match='compile must be'):
        build(compile=value)


def test_bad_compile_teacher_value():
    with pytest.raises(ValueError, match='compile_teacher must be'):
        build(compile_teacher='yes')


def test_bad_channels_last_value():
    with pytest.raises(ValueError, match="channels_last must be True or False, got 'yes'"):
        build(channels_last='yes')


@pytest.mark.parametrize('kwargs, message', [
    (dict(cuda_graphs='yes'), "cuda_graphs must be True, False or 'auto'"),
    (dict(cuda_graphs=True, compile=False), 'cuda_graphs=True needs the compiled student'),
    (dict(cuda_graphs='auto', compile=dict(mode='default')), 'both choose the torch.compile'),
    (dict(cuda_graphs='auto', compile=dict(options={'max_autotune': True})),
     "compile\\['options'\\] and cuda_graphs='auto'"),
])
def test_bad_cuda_graphs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(**kwargs)


def test_compile_teacher_with_a_cuda_graph_mode_is_one_compiled_function(monkeypatch):
    """The teacher is compiled inside the student's function: one call of torch.compile,
    so under CUDA graphs one graphed function (two in a row fail, pytorch#160281)."""
    calls = []
    monkeypatch.setattr(step_module.torch, 'compile', lambda function, **options: calls.append(
        (function.__name__, options)) or (lambda *args: function(*args)))
    model = build(compile=dict(mode='reduce-overhead'), compile_teacher=True)
    step(model, torch.randn(2, 3, 64, 64))
    assert calls == [('teacher_and_student', dict(mode='reduce-overhead'))]
    assert model.compiled_step.teacher_inside


def test_cuda_graphs_mode_reaches_torch_compile(monkeypatch):
    """On CUDA inputs (faked: this machine has none) the student is compiled with
    mode='reduce-overhead' and gradients kept from a step are refused."""
    calls = []

    def fake_compile(function, **options):  # records the options, runs eager
        calls.append(options)
        return lambda *args: function(*args)

    monkeypatch.setattr(step_module.torch, 'compile', fake_compile)
    monkeypatch.setattr(step_module.CompiledStep, 'use_cuda_graphs', lambda self, on_cuda: True)
    logged = []
    monkeypatch.setattr(step_module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    graphed = []
    monkeypatch.setattr(step_module, 'cuda_graphed',
                        lambda options, on_cuda: graphed.append(options) or True)
    model = build(compile=True, cuda_graphs='auto', compile_teacher=True)
    inputs = torch.randn(2, 3, 64, 64)
    step(model, inputs)  # clears the gradients after its backward, as the optim wrapper
    assert calls == [dict(mode='reduce-overhead')]  # one function: teacher and student
    assert model.compiled_step.compiled_with == dict(mode='reduce-overhead')
    assert graphed == [dict(mode='reduce-overhead')] and model.compiled_step.cuda_graphed
    assert ("compiled with {'mode': 'reduce-overhead'}, the teacher inside, CUDA graphs on"
            in logged[-1])
    step(model, inputs)  # cleared: accepted
    model.train()
    model.loss(inputs)['loss_feat'].backward()  # not cleared: accumulating
    with pytest.raises(RuntimeError, match='accumulative_counts'):
        model.loss(inputs)
    model.eval()
    model.loss(inputs)  # evaluation does not touch the gradients


def test_no_cuda_graphs_on_cpu_inputs():
    model = build(compile=dict(backend='aot_eager', mode='reduce-overhead'))
    step(model, torch.randn(2, 3, 64, 64))
    assert model.compiled_step.compiled_with == dict(backend='aot_eager', mode='reduce-overhead')
    assert not model.compiled_step.cuda_graphed  # nothing is graphed on the CPU: no check


@pytest.mark.parametrize('accumulative_counts', [1, 2])
def test_cuda_graphs_check_in_mmengine_optim_wrapper(monkeypatch, accumulative_counts):
    """Through mmengine's OptimWrapper (which clears gradients with set_to_none after each
    update): plain steps run, accumulating ones stop before the first update."""
    from mmengine.optim import OptimWrapper

    monkeypatch.setattr(step_module.torch, 'compile',  # runs eager, as a new function
                        lambda function, **options: lambda *args: function(*args))
    monkeypatch.setattr(step_module.CompiledStep, 'use_cuda_graphs', lambda self, on_cuda: True)
    monkeypatch.setattr(step_module, 'cuda_graphed', lambda options, on_cuda: True)
    model = build(compile=True, cuda_graphs='auto')
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper = OptimWrapper(torch.optim.SGD(params, lr=0.01),
                           accumulative_counts=accumulative_counts)
    wrapper.initialize_count_status(model, 0, 4)
    before = [p.detach().clone() for p in params]
    inputs = torch.randn(2, 3, 64, 64)
    wrapper.update_params(model.loss(inputs)['loss_feat'])  # compiles (faked), arms
    assert model.compiled_step.cuda_graphed
    if accumulative_counts == 1:
        for _ in range(2):
            wrapper.update_params(model.loss(inputs)['loss_feat'])
        return
    # the first micro-step accumulated without an update
    with pytest.raises(RuntimeError, match='accumulative_counts'):
        model.loss(inputs)
    assert all(torch.equal(p, b) for p, b in zip(params, before))  # nothing was updated
