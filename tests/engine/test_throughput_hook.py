"""ThroughputHook logs img/s and the share of time waiting for data, from IterTimerHook's
timings, over the log window."""
import time

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from hgkd_mm.engine.throughput_hook import ThroughputHook

BATCH = 4


class SlowImages(Dataset):
    """Images that take ``seconds`` each to load."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __len__(self):
        return 64

    def __getitem__(self, index):
        time.sleep(self.seconds)
        return dict(inputs=torch.zeros(3, 8, 8))


class SlowStep(BaseModel):
    """A model whose step takes ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='loss'):
        time.sleep(self.seconds)
        return dict(loss=(self.weight * inputs.mean()).abs())


def train(tmp_path, load_s, step_s, iters=8, hooks=None, default_hooks=None):
    runner = Runner(
        model=SlowStep(step_s), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=SlowImages(load_s), batch_size=BATCH, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        custom_hooks=hooks if hooks is not None else [dict(type='ThroughputHook')],
        default_hooks=default_hooks or dict(logger=dict(type='LoggerHook', interval=4)),
        log_processor=dict(window_size=4), default_scope='mmengine')
    runner.train()
    return runner


def test_throughput_and_data_wait(tmp_path):
    # loading a batch takes as long as the step: about half the time is waiting for data
    runner = train(tmp_path, load_s=0.01, step_s=0.04)
    hub = runner.message_hub
    seconds = hub.get_scalar('train/time').data[0][-4:]
    data_seconds = hub.get_scalar('train/data_time').data[0][-4:]
    assert hub.get_scalar('train/img_per_s').current() == pytest.approx(
        4 * BATCH / seconds.sum())
    assert hub.get_scalar('train/data_wait').current() == pytest.approx(
        data_seconds.sum() / seconds.sum())
    assert 0.3 < hub.get_scalar('train/data_wait').current() < 0.7
    assert 0.5 * BATCH / 0.08 < hub.get_scalar('train/img_per_s').current() < BATCH / 0.08
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'img_per_s: ' in log and 'data_wait: ' in log


def test_fast_loader_waits_little(tmp_path):
    # the loader's own overhead (collate, the hooks after IterTimerHook) is some ms
    runner = train(tmp_path, load_s=0.0, step_s=0.15)
    assert runner.message_hub.get_scalar('train/data_wait').current() < 0.2


def test_needs_iter_timer_hook(tmp_path):
    with pytest.raises(ValueError, match='IterTimerHook'):
        train(tmp_path, 0, 0, default_hooks=dict(timer=None))


def test_window_size_is_checked():
    with pytest.raises(ValueError, match='window_size'):
        ThroughputHook(window_size=0)
