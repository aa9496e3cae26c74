"""The Triton masked norm against the torch one; exits non-zero with the first mismatch.

    TRITON_INTERPRET=1 python dev/triton_norm_check.py   # CPU (what the test runs)
    python dev/triton_norm_check.py cuda                 # on a GPU
"""
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hgkd_mm.models.backbones import HGKDSparseResNet  # noqa: E402
from hgkd_mm.models.sparse import MaskedBatchNorm2d, MaskPyramid  # noqa: E402
from hgkd_mm.models.sparse import triton_norm  # noqa: E402


def close(name, actual, expected, tol=2e-5):
    error = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    if not error <= tol * max(scale, 1):
        sys.exit(f'{name}: max error {error:.3g} (scale {scale:.3g})')


DEVICE = torch.device(sys.argv[1] if len(sys.argv) > 1 else 'cpu')
# float32 convolutions on a GPU: TF32 would round each one to 1e-3 and hide the comparison
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def check_norm(shape, relu, channels_last, affine, dtype=torch.float32, grid_size=(2, 3)):
    """``grid_size``: the mask grid, which must divide the feature size (the model's
    stride-32 grid is 7 x 7 at 224 px)."""
    torch.manual_seed(sum(shape) + 2 * relu + channels_last)
    batch, channels, height, width = shape
    grid = torch.rand(batch, *grid_size) > 0.5
    grid[:, 0, 0] = True
    mask = MaskPyramid(grid).of_size((height, width), dtype).to(DEVICE)
    x = (torch.randn(shape) * 2 + 0.5).to(DEVICE, dtype)  # raw conv output: not zero masked
    upstream = torch.randn(shape).to(DEVICE, dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for impl in ('torch', 'triton'):
        # the reference runs in float32 on the same (rounded) values: the torch ops would
        # round scale and shift to bfloat16 and flip the ReLU of values near zero
        as_impl = (lambda t: t.float()) if impl == 'torch' else (lambda t: t)
        norm = MaskedBatchNorm2d(channels, affine=affine).to(DEVICE)
        norm.impl = impl
        if affine:
            with torch.no_grad():
                norm.weight.copy_(torch.linspace(0.5, 2, channels))
                norm.bias.copy_(torch.linspace(-1, 1, channels))
        x_in = as_impl(x).clone().contiguous(memory_format=fmt).requires_grad_()
        out = norm(x_in, as_impl(mask), relu=relu)
        (out * as_impl(upstream)).sum().backward()
        grads = [x_in.grad] + ([norm.weight.grad, norm.bias.grad] if affine else [])
        results.append([out, norm.running_mean, norm.running_var] + grads)
        if impl == 'triton' and channels_last and not out.is_contiguous(
                memory_format=torch.channels_last):
            sys.exit(f'{shape}: channels-last input gave a {out.stride()} output')
    names = ['out', 'running_mean', 'running_var', 'grad_x', 'grad_weight', 'grad_bias']
    tol = 2e-5 if dtype == torch.float32 else 1e-2  # bfloat16 output and gradient
    for name, expected, actual in zip(names, *results):
        close(f'{shape} relu={relu} channels_last={channels_last} affine={affine} {dtype} '
              f'{name}', actual.float(), expected.float(), tol)
    if (results[1][0] * (1 - mask)).abs().max() != 0:
        sys.exit(f'{shape}: output not zero where masked')


class CountOps(TorchDispatchMode):
    """The torch ops run (views, copies and the interpreter's ``set_`` left out)."""
    SKIP = {'view', '_unsafe_view', 'expand', 'permute', 'transpose', 't', 'slice', 'select',
            'unsqueeze', 'squeeze', 'as_strided', 'detach', 'alias', 'split', 'unbind',
            'empty', 'empty_like', 'empty_strided', 'new_empty', 'lift_fresh', 'copy_',
            '_to_copy', 'set_'}

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in self.SKIP:
            self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def check_few_torch_ops():
    """The per-channel terms and the running statistics run in the two small kernels:
    besides them, one norm + ReLU, forward and backward, runs only the visible count and
    the batch counter's increment in torch ops (the torch implementation: about 50)."""
    grid = torch.rand(4, 2, 2) > 0.5
    grid[:, 0, 0] = True
    mask = MaskPyramid(grid).of_size((8, 8), torch.float32).to(DEVICE)
    norm = MaskedBatchNorm2d(16).to(DEVICE)
    norm.impl = 'triton'
    x = torch.randn(4, 16, 8, 8, device=DEVICE, requires_grad=True)
    upstream = torch.randn(4, 16, 8, 8, device=DEVICE)
    with CountOps() as record:
        torch.autograd.backward(norm(x, mask, relu=True), upstream)
    if len(record.ops) > 2:  # the visible count, num_batches_tracked
        sys.exit(f'the triton norm ran {len(record.ops)} torch ops: {record.ops}')


def check_cumulative_average():
    """momentum=None (cumulative average): the running statistics are updated in torch ops,
    as the torch implementation does; two steps give its numbers."""
    grid = torch.rand(4, 2, 2) > 0.5
    grid[:, 0, 0] = True
    mask = MaskPyramid(grid).of_size((8, 8), torch.float32).to(DEVICE)
    stats = []
    for impl in ('torch', 'triton'):
        torch.manual_seed(3)
        norm = MaskedBatchNorm2d(16, momentum=None).to(DEVICE)
        norm.impl = impl
        for _ in range(2):
            norm(torch.randn(4, 16, 8, 8, device=DEVICE) + 1, mask, relu=True)
        stats.append(torch.cat([norm.running_mean, norm.running_var]))
    close('momentum=None running statistics', stats[1], stats[0])


def check_backbone():
    """A sparse ResNet-18 step: norm_impl='triton' gives norm_impl='torch'."""
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 64, 64, device=DEVICE)
    mask = torch.rand(2, 2, 2, device=DEVICE) > 0.4
    mask[:, 0, 0] = True
    results = []
    for impl in ('torch', 'triton'):
        torch.manual_seed(1)
        model = HGKDSparseResNet(18, norm_impl=impl).to(DEVICE)
        outs = model(inputs, mask)
        sum(out.square().mean() for out in outs).backward()
        results.append([*outs, model.conv1.weight.grad, model.layer4[1].conv2.weight.grad])
    for i, (expected, actual) in enumerate(zip(*results)):
        close(f'resnet18 output/grad {i}', actual, expected, tol=1e-4)


if __name__ == '__main__':
    if not triton_norm.usable_for(torch.zeros(1, device=DEVICE)):
        sys.exit(f'triton kernels not usable on {DEVICE}: on the CPU set TRITON_INTERPRET=1')
    for shape in [(3, 5, 8, 12), (2, 3, 24, 24), (4, 70, 2, 3)]:  # 576 positions: 2 tiles
        for relu in (False, True):
            for channels_last in (False, True):
                check_norm(shape, relu, channels_last, affine=True)
    check_norm((3, 5, 8, 12), True, False, affine=False)
    check_norm((3, 5, 8, 12), True, True, affine=True, dtype=torch.bfloat16)
    triton_norm.TARGET_PROGRAMS = 3  # positions split in 2, two tiles each, one past the end
    check_norm((1, 3, 40, 42), True, False, affine=True)
    triton_norm.TARGET_PROGRAMS = 2048
    if DEVICE.type == 'cuda':
        for channels_last in (False, True):  # a ResNet-50 stage-1 map at 224 px
            check_norm((8, 64, 56, 56), True, channels_last, affine=True,
                       dtype=torch.bfloat16, grid_size=(7, 7))
    check_few_torch_ops()
    check_cumulative_average()
    check_backbone()
    print('triton masked norm: all checks passed')
