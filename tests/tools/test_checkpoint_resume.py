"""Resuming from epoch_1.pth reproduces the uninterrupted run; checkpoints load weights_only."""
import subprocess
import sys

import torch
from helpers import EPOCHS_2, run_tool, write_cls_config

from hgkd_mm.utils import allow_mmengine_checkpoint_globals


def test_resume_matches_uninterrupted_run(tmp_path, image_folder, trained_2_epochs):
    allow_mmengine_checkpoint_globals()
    config = write_cls_config(tmp_path / 'tiny_cls.py', image_folder, EPOCHS_2)
    work_dir = tmp_path / 'work'
    # `--resume` without a value (latest checkpoint of the work dir): see test_tool_args.py
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir,
                       '--resume', trained_2_epochs / 'epoch_1.pth'], check=True)
    assert 'resumed epoch: 1' in result.stdout + result.stderr

    expected = torch.load(trained_2_epochs / 'epoch_2.pth', weights_only=True)['state_dict']
    resumed = torch.load(work_dir / 'epoch_2.pth', weights_only=True)['state_dict']
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)  # bitwise


def test_mmengine_checkpoint_needs_the_allowlist(trained_2_epochs):
    checkpoint = trained_2_epochs / 'epoch_1.pth'
    plain = subprocess.run(
        [sys.executable, '-c', f'import torch; torch.load({str(checkpoint)!r})'],
        capture_output=True, text=True)
    assert plain.returncode != 0 and 'weights_only' in plain.stderr

    allow_mmengine_checkpoint_globals()
    loaded = torch.load(checkpoint, weights_only=True)
    assert {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'} <= set(loaded)
    assert set(loaded['meta']['rng_state']) >= {'torch', 'numpy', 'python'}
