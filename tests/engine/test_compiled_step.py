"""CompiledStep on a two-part step of plain functions: what it runs, when it compiles, its
CUDA-graph rules (the model-level checks are in tests/models/algorithms/test_hgkd_compile.py)."""
import pytest
import torch

from hgkd_mm.engine import compiled_step as step_module
from hgkd_mm.engine.compiled_step import CompiledStep, cuda_graphed


class TwoParts(torch.nn.Module):
    """teacher: ``x -> 2x`` (no gradient); student: ``loss = mean((w * x - target)^2)``."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.5))
        self.teacher_calls = 0

    def teacher(self, x):
        self.teacher_calls += 1
        return (2 * x).detach()

    def student(self, x, target):
        return dict(loss=((self.weight * x - target)**2).mean())


def expected_loss(parts, x):
    return ((parts.weight.detach() * x - 2 * x)**2).mean()


@pytest.mark.parametrize('compile, compile_teacher, compiled_with, inside', [
    (False, False, None, False),
    ('auto', True, None, False),  # CPU inputs: eager
    (dict(backend='eager'), False, dict(backend='eager'), False),
    (dict(backend='eager'), True, dict(backend='eager'), True),
])
def test_runs_student_on_teacher_output(compile, compile_teacher, compiled_with, inside):
    parts, x = TwoParts(), torch.randn(4)
    step = CompiledStep(compile, compile_teacher, module=parts)
    assert not step.started
    for _ in range(2):
        assert torch.allclose(step(parts.teacher, parts.student, x)['loss'],
                              expected_loss(parts, x))
    assert step.started and parts.teacher_calls == 2
    assert step.compiled_with == compiled_with and step.teacher_inside is inside
    assert not step.cuda_graphed
    # the part alone: the teacher's output is used unless the teacher is inside
    target = torch.zeros(4)
    alone = step.compiled_part(x, teacher_output=target)['loss']
    reference = expected_loss(parts, x) if inside else (parts.weight.detach() * x).square().mean()
    assert torch.allclose(alone, reference)


def test_compiled_part_needs_a_first_step():
    with pytest.raises(RuntimeError, match='run one step first'):
        CompiledStep().compiled_part(torch.zeros(1), teacher_output=torch.zeros(1))


def test_compile_failures_fall_back(monkeypatch):
    """The pair fails, then the student alone: eager, one warning each, then the choice."""
    logged = []
    monkeypatch.setattr(step_module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    parts, x = TwoParts(), torch.randn(4)
    step = CompiledStep(dict(backend='no_such_backend'), compile_teacher=True, module=parts,
                        name='Toy')
    assert torch.allclose(step(parts.teacher, parts.student, x)['loss'], expected_loss(parts, x))
    assert 'torch.compile of the Toy student and teacher failed, compiling the student' in logged[0]
    assert 'torch.compile of the Toy student failed, training eager instead' in logged[1]
    assert logged[2] == 'Toy student step: eager'
    assert step.compiled_with is None and not step.teacher_inside


def test_cuda_graphs_auto_in_one_process_only(monkeypatch):
    step = CompiledStep(cuda_graphs='auto')
    assert step.use_cuda_graphs(on_cuda=True)
    assert not step.use_cuda_graphs(on_cuda=False)  # CUDA graphs need CUDA inputs
    logged = []
    monkeypatch.setattr(step_module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    monkeypatch.setattr(step_module, 'is_distributed', lambda: True)  # DDP, any size
    assert not step.use_cuda_graphs(on_cuda=True)
    assert 'without CUDA graphs in this distributed run' in logged[0]
    assert CompiledStep(cuda_graphs=True).use_cuda_graphs(on_cuda=True)
    assert not CompiledStep(cuda_graphs=False).use_cuda_graphs(on_cuda=True)


def test_kept_gradients_are_refused_under_cuda_graphs_in_training(monkeypatch):
    monkeypatch.setattr(step_module, 'cuda_graphed', lambda options, on_cuda: True)
    parts, x = TwoParts(), torch.randn(4)
    step = CompiledStep(dict(backend='eager'), module=parts)
    step(parts.teacher, parts.student, x)['loss'].backward()
    assert step.cuda_graphed and step.gradients_kept()
    with pytest.raises(RuntimeError, match='accumulative_counts'):
        step(parts.teacher, parts.student, x)
    parts.eval()  # evaluation does not touch the gradients
    step(parts.teacher, parts.student, x)
    parts.train()
    parts.weight.grad = None
    step(parts.teacher, parts.student, x)


@pytest.mark.parametrize('options, on_cuda, expected', [
    (dict(mode='reduce-overhead'), True, True),
    (dict(mode='max-autotune', backend='inductor'), True, True),
    (dict(mode='reduce-overhead'), False, False),  # CPU inputs
    (dict(mode='reduce-overhead', backend='aot_eager'), True, False),  # the mode is ignored
    (dict(mode='max-autotune-no-cudagraphs'), True, False),
    ({}, True, False),
    (dict(options={'triton.cudagraphs': True}), True, True),
    (dict(options={'triton.cudagraphs': True}), False, False),
    (dict(options={'max_autotune': True}), True, False),
])
def test_cuda_graphed(options, on_cuda, expected):
    assert cuda_graphed(options, on_cuda) is expected


@pytest.mark.parametrize('kwargs, message', [
    (dict(compile='yes'), 'compile must be'),
    (dict(compile=dict(mdoe='default')), 'are not torch.compile arguments'),
    (dict(compile_teacher=1), 'compile_teacher must be True or False'),
    (dict(cuda_graphs='yes'), "cuda_graphs must be True, False or 'auto'"),
    (dict(cuda_graphs=True, compile=False), 'cuda_graphs=True needs the compiled student'),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompiledStep(**kwargs)
