"""RNGStateHook saves the global RNG states in weights_only-safe types and restores them."""
import random
import subprocess
import sys

import numpy as np
import torch
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from hgkd_mm.engine import RNGStateHook


def draw() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_registered_for_every_scope():
    assert HOOKS.get('RNGStateHook') is RNGStateHook
    assert PRETRAIN_HOOKS.get('RNGStateHook') is RNGStateHook


def test_save_then_load_restores_the_states(tmp_path):
    hook = RNGStateHook()
    np.random.randn()  # a cached gaussian is part of numpy's state
    checkpoint = dict(meta=dict(epoch=1))
    hook.before_save_checkpoint(None, checkpoint)
    expected = draw()

    path = tmp_path / 'rng.pth'
    torch.save(checkpoint, path)
    # a fresh interpreter: no allowlist from hgkd_mm, so only plain types load
    subprocess.run([sys.executable, '-c', f'import torch; torch.load({str(path)!r})'], check=True)

    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    hook.after_load_checkpoint(None, torch.load(path, weights_only=True))
    assert draw() == expected


def test_before_train_restores_again_after_a_reseed():
    hook = RNGStateHook()
    checkpoint = dict(meta=dict())
    hook.before_save_checkpoint(None, checkpoint)
    expected = draw()
    hook.after_load_checkpoint(None, checkpoint)
    torch.manual_seed(7), np.random.seed(7), random.seed(7)  # Runner.resume re-seeding
    hook.before_train(None)
    assert draw() == expected
