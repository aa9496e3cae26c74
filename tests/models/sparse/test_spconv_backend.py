"""The spconv backend gives the masked backend's results; without spconv it says which
build to install for the torch found."""
import builtins
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from hgkd_mm.models.backbones import HGKDSparseResNet
from hgkd_mm.utils import spconv_build


def require_spconv() -> None:
    """Skip without spconv, except under `make test` (HGKD_REQUIRE_SPCONV=1), which
    installs it: there a missing spconv is a failure."""
    if os.environ.get('HGKD_REQUIRE_SPCONV') == '1':
        assert importlib.util.find_spec('spconv') is not None, 'tools/install_env.sh installs spconv'
    pytest.importorskip('spconv.pytorch', reason='spconv is installed by tools/install_env.sh')


def test_spconv_backend_equals_masked_backend():
    require_spconv()
    torch.manual_seed(0)
    masked = HGKDSparseResNet(18, backend='masked').double()
    sparse = HGKDSparseResNet(18, backend='spconv').double()
    sparse.load_state_dict(masked.state_dict())
    masked.train(), sparse.train()
    inputs = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    mask = torch.tensor([[[1, 0, 1], [0, 1, 1]], [[0, 0, 1], [1, 0, 0]]], dtype=torch.bool)
    inputs_a = inputs.clone().requires_grad_()
    inputs_b = inputs.clone().requires_grad_()
    outs_a, outs_b = masked(inputs_a, mask), sparse(inputs_b, mask)
    for a, b in zip(outs_a, outs_b):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), (a - b).abs().max()
    sum(o.sum() for o in outs_a).backward()
    sum(o.sum() for o in outs_b).backward()
    for (name, pa), pb in zip(masked.named_parameters(), sparse.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-8, atol=1e-10), name


def test_spconv_backend_under_bf16_autocast():
    """The benchmark's setting (bf16 autocast): the gathered products come out in bf16."""
    require_spconv()
    torch.manual_seed(0)
    masked = HGKDSparseResNet(18, backend='masked')
    sparse = HGKDSparseResNet(18, backend='spconv')
    sparse.load_state_dict(masked.state_dict())
    inputs = torch.randn(2, 3, 64, 64)
    mask = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 1]]], dtype=torch.bool)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out_a, out_b = masked(inputs, mask)[-1], sparse(inputs, mask)[-1]
    out_a, out_b = out_a.float(), out_b.float()
    assert ((out_a - out_b).norm() / out_a.norm()) < 0.2  # bf16 rounding through 18 layers
    assert not out_b[0][:, ~mask[0]].any() and not out_b[1][:, ~mask[1]].any()
    out_b.float().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in sparse.parameters())


def test_spconv_missing_gives_install_hint(monkeypatch):
    real_import = builtins.__import__

    def no_spconv(name, *args, **kwargs):
        if name.startswith('spconv'):
            raise ImportError('No module named spconv')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_spconv)
    with pytest.raises(ImportError, match=r"backend='spconv'.*GPU not found.*pip install "
                       r"spconv==2\.3\.8`"):
        HGKDSparseResNet(18, backend='spconv')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.version, 'cuda', '12.4')
    with pytest.raises(ImportError, match=r'pip install spconv-cu124==2\.3\.8`'):
        HGKDSparseResNet(18, backend='spconv')
    monkeypatch.setattr(torch.version, 'cuda', '10.2')
    with pytest.raises(ImportError, match=r'no spconv build for CUDA 10\.2 .*backend=.masked'):
        HGKDSparseResNet(18, backend='spconv')


@pytest.mark.parametrize('cuda, gpu, requirement', [
    (None, False, 'spconv==2.3.8'), ('13.0', False, 'spconv==2.3.8'),
    ('11.4', True, 'spconv-cu114==2.3.8'), ('11.7', True, 'spconv-cu114==2.3.8'),
    ('11.8', True, 'spconv-cu118==2.3.8'), ('12.0', True, 'spconv-cu120==2.3.6'),
    ('12.1', True, 'spconv-cu121==2.3.8'), ('12.3', True, 'spconv-cu121==2.3.8'),
    ('12.4', True, 'spconv-cu124==2.3.8'), ('12.5', True, 'spconv-cu124==2.3.8'),
    ('12.6', True, 'spconv-cu126==2.3.8'), ('12.8', True, 'spconv-cu126==2.3.8'),
    ('13.0', True, 'spconv-cu126==2.3.8')])
def test_spconv_build_for_torch(cuda, gpu, requirement):
    """Each one is a release on PyPI (spconv-cu117 and -cu120 stop at 2.3.6)."""
    assert spconv_build.spconv_requirement(cuda, gpu) == requirement


def test_no_spconv_build_for_old_cuda():
    with pytest.raises(ValueError, match='no spconv build for CUDA 11.3'):
        spconv_build.spconv_requirement('11.3', True)


def test_spconv_build_script_runs_without_hgkd_mm():
    """tools/install_env.sh runs the file before hgkd_mm is installed."""
    result = subprocess.run([sys.executable, spconv_build.__file__], capture_output=True,
                            text=True, timeout=300, cwd='/')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == spconv_build.spconv_requirement(torch.version.cuda,
                                                                    torch.cuda.is_available())
