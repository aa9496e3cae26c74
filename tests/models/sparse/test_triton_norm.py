"""The Triton masked norm (``norm_impl='triton'``) against the torch one.

The kernels run on the CPU in Triton's interpreter, which needs ``TRITON_INTERPRET=1``
before triton is imported: so the comparison runs in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hgkd_mm.models.backbones import HGKDSparseResNet
from hgkd_mm.models.sparse import triton_norm


@pytest.mark.skipif(not triton_norm.triton_available(), reason='triton is not installed')
def test_triton_kernels_equal_torch_norm_in_interpreter():
    script = Path(__file__).resolve().parents[3] / 'dev' / 'triton_norm_check.py'
    env = dict(os.environ, TRITON_INTERPRET='1')
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'all checks passed' in result.stdout


@pytest.mark.skipif(not triton_norm.triton_available(), reason='triton is not installed')
@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') == '1', reason='kernels interpreted')
def test_triton_impl_falls_back_to_torch_ops_on_cpu():
    """Without CUDA (and without the interpreter) norm_impl='triton' runs the torch ops."""
    inputs = torch.randn(2, 3, 64, 64)
    mask = torch.rand(2, 2, 2) > 0.4
    mask[:, 0, 0] = True
    outs = []
    for impl in ('torch', 'triton'):
        torch.manual_seed(0)
        outs.append(HGKDSparseResNet(18, norm_impl=impl)(inputs, mask)[-1])
    assert torch.equal(*outs)


def test_norm_impl_is_checked():
    with pytest.raises(ValueError, match='norm_impl'):
        HGKDSparseResNet(18, norm_impl='cuda')
