"""A recorder of the ATen ops run inside it. The tests import it by name: pytest puts
``tests/``, the folder of conftest.py, on the path."""
from torch.utils._python_dispatch import TorchDispatchMode


class RecordOps(TorchDispatchMode):
    """``ops``: the name of every op run, in order, e.g. ``'aten.convolution'``."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
