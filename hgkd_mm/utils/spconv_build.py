"""Which spconv build fits the torch found: the CPU package 2.3.8 without a GPU, else the
CUDA build for torch's CUDA version.

This file imports nothing from hgkd_mm, so tools/install_env.sh runs it as a script
(before hgkd_mm is installed) to print the pip name for this machine.
"""
from typing import Optional

SPCONV_VERSION = '2.3.8'
# (first CUDA version, pip name, release): the newest spconv build on PyPI for each CUDA
# range. spconv 2.3.8 has no CUDA 12.0 build (spconv-cu120 stops at 2.3.6) and none
# below CUDA 11.4.
CUDA_BUILDS = (((11, 4), 'spconv-cu114', SPCONV_VERSION),
               ((11, 8), 'spconv-cu118', SPCONV_VERSION),
               ((12, 0), 'spconv-cu120', '2.3.6'),
               ((12, 1), 'spconv-cu121', SPCONV_VERSION),
               ((12, 4), 'spconv-cu124', SPCONV_VERSION),
               ((12, 6), 'spconv-cu126', SPCONV_VERSION))  # CUDA 13 torch runs it too


def spconv_requirement(cuda_version: Optional[str], gpu: bool) -> str:
    """The pip requirement: ``spconv==2.3.8`` (CPU) or the build for torch's CUDA."""
    if not gpu or not cuda_version:
        return f'spconv=={SPCONV_VERSION}'
    version = tuple(int(part) for part in cuda_version.split('.')[:2])
    fitting = [(name, release) for first, name, release in CUDA_BUILDS if first <= version]
    if not fitting:
        raise ValueError(f'no spconv build for CUDA {cuda_version} (the oldest is for 11.4); '
                         "use backend='masked' (the same results)")
    name, release = fitting[-1]
    return f'{name}=={release}'


if __name__ == '__main__':
    import torch
    print(spconv_requirement(torch.version.cuda, torch.cuda.is_available()))
