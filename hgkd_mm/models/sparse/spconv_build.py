"""Which spconv 2.3.8 build fits the torch found: the CPU package without a GPU, else the
CUDA build for torch's CUDA version.

This file imports nothing from hgkd_mm, so tools/install_env.sh runs it as a script
(before hgkd_mm is installed) to print the pip name for this machine.
"""
from typing import Optional

SPCONV_VERSION = '2.3.8'


def spconv_package(cuda_version: Optional[str], gpu: bool) -> str:
    """The pip name: ``spconv`` (CPU) or ``spconv-cuXYZ``."""
    if not gpu or not cuda_version:
        return 'spconv'
    major, minor = (int(part) for part in cuda_version.split('.')[:2])
    if major == 11:
        return 'spconv-cu117' if minor <= 7 else 'spconv-cu118'
    if major == 12 and minor < 6:
        return 'spconv-cu120'
    if (major, minor) >= (12, 6):  # CUDA 13 torch runs the 12.6 build (docs/benchmarks.md)
        return 'spconv-cu126'
    raise ValueError(f'no spconv {SPCONV_VERSION} build for CUDA {cuda_version}; '
                     "use backend='masked' (the same results)")


if __name__ == '__main__':
    import torch
    print(spconv_package(torch.version.cuda, torch.cuda.is_available()))
