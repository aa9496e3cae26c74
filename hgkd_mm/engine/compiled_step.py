"""A distillation step ``student(*args, teacher(*args))`` run eager or through
``torch.compile`` (optionally in CUDA graphs), chosen in the first step, with an eager
fallback when compiling fails.

The model says what the step computes; :class:`CompiledStep` decides how it runs::

    step = CompiledStep(compile='auto', compile_teacher=False, cuda_graphs=False,
                        module=model)
    losses = step(model.teacher, model.student_loss, inputs, mask)
"""
import inspect
import logging
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn as nn
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from torch import Tensor

# torch.compile modes that capture the compiled functions in CUDA graphs (on CUDA inputs)
CUDA_GRAPH_MODES = ('reduce-overhead', 'max-autotune')
# the keyword arguments of torch.compile (model.compile as a dict)
COMPILE_ARGS = set(inspect.signature(torch.compile).parameters) - {'model'}


class CompiledStep:
    """Runs ``student(*args, teacher(*args))``, the student's part compiled or eager.

    In the first call it picks how: with ``compile_teacher`` it compiles teacher and
    student as one function; if that fails, the student alone (the teacher eager); if
    that fails too, or ``compile`` says so, it runs eager. Later calls run the choice.
    The backward is compiled at the first ``backward()``, outside the step, and a batch of
    another size (a last partial batch) recompiles: errors there stop the run with torch's
    message (``compile=False`` avoids them). CUDA graphs are captured in a later step than
    the first, so a capture failure has no eager fallback (``cuda_graphs=False``).

    Args:
        compile (bool | str | dict): ``'auto'``: compiled when the inputs (the first
            argument of the step) are on a CUDA device; ``True`` / ``False``: always / never;
            a dict: ``torch.compile`` keyword arguments, compiled everywhere.
        compile_teacher (bool): compile the teacher inside the student's function (one
            function, so under CUDA graphs one graph: two CUDA-graphed functions in a
            row fail, pytorch#160281).
        cuda_graphs (bool | str): compile with ``mode='reduce-overhead'`` on CUDA inputs.
            ``'auto'``: in a single process only (DDP with CUDA graph trees has open crash
            reports, pytorch#113809); ``True``: in distributed runs too; ``False``: never.
        module (nn.Module, optional): the model the step trains. Under CUDA graphs the
            gradients of its trainable parameters must be cleared before each step in
            training mode (torch overwrites accumulated ones, pytorch#169545), which the
            step checks.
        name (str): the model's name in log messages.

    Attributes:
        compiled_with (dict | None): the ``torch.compile`` arguments in use; None: eager
            (or before the first call).
        teacher_inside (bool): the compiled function runs the teacher too.
        cuda_graphed (bool): the compiled function replays CUDA graphs.
    """

    def __init__(self,
                 compile: Union[bool, str, dict] = 'auto',
                 compile_teacher: bool = False,
                 cuda_graphs: Union[bool, str] = False,
                 module: Optional[nn.Module] = None,
                 name: str = 'H-GKD'):
        check_compile_options(compile, compile_teacher, cuda_graphs)
        self.compile = compile
        self.compile_teacher = compile_teacher
        self.cuda_graphs = cuda_graphs
        self.module = module
        self.name = name
        self.compiled_with: Optional[dict] = None
        self.teacher_inside = False
        self.cuda_graphed = False
        self._teacher: Optional[Callable] = None  # run eager unless teacher_inside
        self._part: Optional[Callable] = None  # the student, or teacher and student

    @property
    def started(self) -> bool:
        """Whether the first call has chosen how the step runs."""
        return self._part is not None

    def __call__(self, teacher: Callable, student: Callable, *args) -> Dict[str, Tensor]:
        """``student(*args, teacher(*args))``, as chosen in the first call (whose
        ``teacher`` and ``student`` are the ones run from then on)."""
        if self._part is None:
            return self._first_call(teacher, student, *args)
        if self.cuda_graphed and self.gradients_kept():
            raise RuntimeError(
                f'the {self.name} student runs in CUDA graphs (model.cuda_graphs), which '
                'overwrite gradients kept from an earlier step (pytorch#169545): clear them '
                'before each step (no optim_wrapper.accumulative_counts > 1, zero_grad with '
                'set_to_none=True), or set model.cuda_graphs=False')
        return self.compiled_part(*args, teacher_output=None if self.teacher_inside
                                  else self._teacher(*args))

    def compiled_part(self, *args, teacher_output=None) -> Dict[str, Tensor]:
        """The part that runs compiled (or eager, as chosen) alone: the student on
        ``teacher_output``, or, with :attr:`teacher_inside`, teacher and student
        (``teacher_output`` unused). For timing and counting the student's work."""
        if self._part is None:
            raise RuntimeError('CompiledStep.compiled_part: run one step first (the first '
                               'step chooses compiled or eager)')
        return self._part(*args) if self.teacher_inside else self._part(*args, teacher_output)

    def gradients_kept(self) -> bool:
        """Whether ``module`` is training and has gradients from an earlier step."""
        return self.module is not None and self.module.training and any(
            p.grad is not None for p in self.module.parameters() if p.requires_grad)

    def use_cuda_graphs(self, on_cuda: bool) -> bool:
        """Whether ``cuda_graphs`` applies to this run (CUDA inputs; one process for
        ``'auto'``)."""
        if self.cuda_graphs is False or not on_cuda:
            return False
        if self.cuda_graphs == 'auto' and is_distributed():  # DDP-wrapped, even on 1 GPU
            print_log("model.cuda_graphs='auto': the student is compiled without CUDA graphs "
                      'in this distributed run (DDP with CUDA graph trees has open crash '
                      'reports, pytorch#113809); cuda_graphs=True uses them anyway',
                      logger='current', level=logging.INFO)
            return False
        return True

    def _first_call(self, teacher: Callable, student: Callable, *args) -> Dict[str, Tensor]:
        on_cuda = isinstance(args[0], Tensor) and args[0].is_cuda
        wanted = self.compile if self.compile != 'auto' else on_cuda
        options = dict(wanted) if isinstance(wanted, dict) else {}
        if wanted is not False and self.use_cuda_graphs(on_cuda):
            options['mode'] = 'reduce-overhead'
        self._teacher = teacher
        compiled = None
        if wanted is not False and self.compile_teacher:

            def teacher_and_student(*args):
                return student(*args, teacher(*args))

            compiled = self._try_compile(
                teacher_and_student, options, 'student and teacher',
                'compiling the student alone (model.compile_teacher=False skips this)', *args)
            self.teacher_inside = compiled is not None
        if compiled is None:
            teacher_output = teacher(*args)
            if wanted is not False:
                compiled = self._try_compile(
                    student, options, 'student',
                    'training eager instead (model.compile=False skips this)', *args,
                    teacher_output)
        if compiled is None:
            self._part, losses = student, student(*args, teacher_output)
        else:
            self._part, losses = compiled
            self.compiled_with = options
            self.cuda_graphed = cuda_graphed(options, on_cuda)  # arms the gradient check
        print_log(f'{self.name} student step: compiled with {options}'
                  f"{', the teacher inside' if self.teacher_inside else ''}, CUDA graphs "
                  f"{'on' if self.cuda_graphed else 'off'}"
                  if self.compiled_with is not None else f'{self.name} student step: eager',
                  logger='current', level=logging.INFO)
        return losses

    def _try_compile(self, function: Callable, options: dict, part: str, otherwise: str,
                     *args):
        """``(torch.compile(function, **options), its result on args)``, or None with a
        warning saying what happens ``otherwise`` if compiling or running it fails."""
        try:
            compiled = torch.compile(function, **options)
            return compiled, compiled(*args)
        except Exception as error:  # noqa: BLE001  any compiler failure: the caller goes on
            message = str(error).splitlines()[0] if str(error) else ''
            print_log(f'torch.compile of the {self.name} {part} failed, {otherwise}: '
                      f'{type(error).__name__}: {message}',
                      logger='current', level=logging.WARNING)
            return None


def cuda_graphed(options: dict, on_cuda: bool) -> bool:
    """Whether ``torch.compile(**options)`` replays CUDA graphs: inductor's graph modes, or
    its ``triton.cudagraphs`` option, on CUDA inputs (other backends ignore both)."""
    graphs = (options.get('mode') in CUDA_GRAPH_MODES
              or bool((options.get('options') or {}).get('triton.cudagraphs')))
    return on_cuda and graphs and options.get('backend', 'inductor') == 'inductor'


def check_compile_options(compile, compile_teacher, cuda_graphs) -> None:
    """Refuse values and combinations of the three options that cannot run."""
    if not (isinstance(compile, (bool, dict)) or compile == 'auto'):
        raise ValueError(f"compile must be True, False, 'auto' or a dict of torch.compile "
                         f'arguments, got {compile!r}')
    unknown = sorted(set(compile) - COMPILE_ARGS) if isinstance(compile, dict) else []
    if unknown:
        raise ValueError(f'compile: {unknown} are not torch.compile arguments (it takes '
                         f'{sorted(COMPILE_ARGS)})')
    if not isinstance(compile_teacher, bool):
        raise ValueError(f'compile_teacher must be True or False, got {compile_teacher!r}')
    if not (isinstance(cuda_graphs, bool) or cuda_graphs == 'auto'):
        raise ValueError(f"cuda_graphs must be True, False or 'auto', got {cuda_graphs!r}")
    mode = compile.get('mode') if isinstance(compile, dict) else None
    if cuda_graphs is True and compile is False:
        raise ValueError('cuda_graphs=True needs the compiled student, and compile is False')
    if cuda_graphs is not False and mode is not None:
        raise ValueError(f"compile['mode']={mode!r} and cuda_graphs={cuda_graphs!r} both "
                         'choose the torch.compile mode: set one of them')
    if cuda_graphs is not False and isinstance(compile, dict) and 'options' in compile:
        raise ValueError(f"compile['options'] and cuda_graphs={cuda_graphs!r}: torch.compile "
                         "takes a mode or options, not both; set cuda_graphs=False and "
                         "'triton.cudagraphs' in the options")


__all__ = ['CompiledStep', 'cuda_graphed', 'check_compile_options', 'COMPILE_ARGS',
           'CUDA_GRAPH_MODES']
