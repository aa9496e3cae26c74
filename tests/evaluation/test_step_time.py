"""Step times of two configs measured side by side, and the equal-time step count."""
from __future__ import annotations

from pathlib import Path

import pytest

from hgkd_mm.evaluation import step_time
from helpers import IMAGENET_PREPROCESSOR, tiny_hgkd_cfg

OPTIM = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3))


def write_config(path: Path, model: dict) -> str:
    path.write_text(f"custom_imports = dict(imports=['hgkd_mm'])\ndefault_scope = 'mmpretrain'\n"
                    f'data_preprocessor = {IMAGENET_PREPROCESSOR!r}\n'
                    f'model = {model!r}\noptim_wrapper = {OPTIM!r}\n')
    return str(path)


def test_a_wider_decoder_is_slower_and_both_train(tmp_path):
    import torch
    torch.set_num_threads(1)
    configs = {'narrow': write_config(tmp_path / 'narrow.py', tiny_hgkd_cfg(channels=8)),
               'wide': write_config(tmp_path / 'wide.py', tiny_hgkd_cfg(channels=512))}
    result = step_time.time_steps(configs, batch_size=2, img_size=64, iters=5, warmup=1)
    assert all(len(part['times_s']) == 5 for part in result.values())
    # a 512-wide decoder costs far more than an 8-wide one: the timer sees the model's work
    assert step_time.ratio(result, 'wide', 'narrow') > 1.2
    assert step_time.steps_at_equal_time(100, result, 'narrow', 'wide') < 100


def test_steps_at_equal_time_arithmetic():
    result = {'fast': dict(median_s=1.0), 'slow': dict(median_s=4.0)}
    assert step_time.steps_at_equal_time(400, result, 'fast', 'slow') == 100
    assert step_time.steps_at_equal_time(400, result, 'slow', 'fast') == 1600
    assert step_time.steps_at_equal_time(1, result, 'fast', 'slow') == 1  # at least one
    with pytest.raises(KeyError):
        step_time.ratio(result, 'fast', 'other')
