"""Random stride-32 masks with the same number of visible cells in every sample. The tests
import it by name: pytest puts ``tests/``, the folder of conftest.py, on the path."""
import torch


def random_mask(batch: int, h: int, w: int, keep: int, seed: int = 0) -> torch.Tensor:
    """``(batch, h, w)`` bool, True = visible, ``keep`` visible cells per sample."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(batch, h * w, generator=g).argsort(1)[:, :keep]
    return torch.zeros(batch, h * w, dtype=torch.bool).scatter_(1, ids, True).view(batch, h, w)
