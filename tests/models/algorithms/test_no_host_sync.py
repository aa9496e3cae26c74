"""The default H-GKD training step (model loss, backward, clipping, ForeachLamb) has no op
that makes a GPU wait for the host: no ``.item()``, ``nonzero``, boolean indexing or
tensor truth test. Checked on the CPU by recording every ATen op of the step."""
import pytest
import torch

from hgkd_mm.engine import ForeachLamb

from helpers import RecordOps
from test_hgkd import build

# ops whose result size or value the host must read from the device
SYNCING_OPS = ('aten._local_scalar_dense', 'aten.item', 'aten.is_nonzero', 'aten.nonzero',
               'aten.masked_select', 'aten.equal', 'aten.unique', 'aten._unique')


def syncing(ops):
    return sorted(op for op in set(ops) if op.startswith(SYNCING_OPS))


@pytest.mark.parametrize('backend', ['masked', 'packed'])
def test_training_step_has_no_host_sync(backend):
    model = build(compile=False, backbone=dict(type='HGKDSparseResNet', depth=18,
                                               backend=backend))
    model.train()
    optimizer = ForeachLamb(model.parameters(), lr=1e-3, weight_decay=0.04)
    inputs = torch.randn(2, 3, 64, 64)
    model.loss(inputs)['loss_feat'].backward()  # first step: picks eager, outside the record
    optimizer.zero_grad(set_to_none=True)
    with RecordOps() as record:
        loss = model.loss(inputs)['loss_feat']
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    assert 'aten.convolution' in record.ops  # the recorder saw the step
    assert syncing(record.ops) == []


def test_the_recorder_sees_a_sync():
    """The check can fail: a running-stat update with momentum=None reads a count."""
    model = build(compile=False)
    model.train()
    model.backbone.norm1.momentum = None
    with RecordOps() as record:
        model.loss(torch.randn(2, 3, 64, 64))
    assert syncing(record.ops) == ['aten._local_scalar_dense']
