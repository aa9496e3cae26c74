"""safe_load reads mmengine's checkpoints with weights_only, and its allowlist stays narrow."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from torch import nn

from hgkd_mm.utils import allow_mmengine_checkpoint_globals, safe_load


class ReachesForAttributes:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``: not a statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_message_hub_round_trips_weights_only(tmp_path):
    allow_mmengine_checkpoint_globals()
    hub = MessageHub.get_instance('test_checkpoint_io')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/iter', 3)
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=hub.state_dict()), path)
    loaded = torch.load(path, weights_only=True)['message_hub']['log_scalars']
    assert loaded['train/loss'].mean() == 0.5 and loaded['train/iter'].current() == 3


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    allow_mmengine_checkpoint_globals()
    path = tmp_path / 'evil.pth'
    torch.save(dict(x=ReachesForAttributes()), path)
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        torch.load(path, weights_only=True)


def test_safe_load_reads_an_mmengine_runner_checkpoint(tmp_path):
    """A checkpoint written by mmengine's Runner holds HistoryBuffers and numpy values."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class ToyModel(BaseModel):

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, inputs, mode='loss'):
            return dict(loss=self.linear(inputs).pow(2).mean())

    dataset = [dict(inputs=torch.randn(4)) for _ in range(4)]
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dataset, batch_size=2,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        cfg=dict(model=dict(type='ToyModel')))
    runner.train()
    path = str(tmp_path / 'iter_2.pth')

    # that plain torch.load refuses it without the allow-list: tests/tools/test_checkpoint_resume.py
    checkpoint = safe_load(path)
    assert set(checkpoint['state_dict']) == {'linear.weight', 'linear.bias'}
    buffers = checkpoint['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    assert len(buffers['train/loss'].data[0]) == 2


class _Reduces:
    """Pickles as ``function(*args)``: how a malicious checkpoint runs code."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize('payload', [
    _Reduces(print, 'arbitrary call'),
    _Reduces(getattr, HistoryBuffer, '__init__'),
    _Reduces(getattr, np.ndarray, 'tofile'),  # an allowed class, not a statistic
])
def test_safe_load_refuses_other_globals(tmp_path, payload):
    path = str(tmp_path / 'unsafe.pth')
    torch.save({'meta': payload}, path)
    with pytest.raises(pickle.UnpicklingError) as refused:
        safe_load(path)
    message = str(refused.value)  # names the file and the reason, without torch's advice
    assert message.startswith(f'cannot read checkpoint {path}: it asks for ')
    assert 'refused by weights_only=True' in message and 'weights_only=False' not in message
