"""The weights_only allowlist for mmengine checkpoints stays narrow."""
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from hgkd_mm.utils import allow_mmengine_checkpoint_globals


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
