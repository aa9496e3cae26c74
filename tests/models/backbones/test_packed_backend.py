"""The packed backend gives the masked backend's features, gradients and running statistics
(the masked backend is checked against mmpretrain in test_sparse_resnet.py, and so is the
packed one there); bad masks and options are named. Its gather and scatter:
tests/models/sparse/test_packed_ops.py."""
import pytest
import torch

from hgkd_mm.models.backbones import HGKDSparseResNet

from helpers import random_mask
from test_sparse_resnet import assert_rel_close, randomize_norms


def pair(depth, **kwargs):
    torch.manual_seed(0)
    masked = HGKDSparseResNet(depth, **kwargs).double()
    randomize_norms(masked)
    packed = HGKDSparseResNet(depth, backend='packed', **kwargs).double()
    packed.load_state_dict(masked.state_dict())
    return masked, packed


@pytest.mark.parametrize('depth,train,channels_last', [(18, True, False), (50, True, False),
                                                       (50, False, False), (50, True, True)])
def test_packed_equals_masked_float64(depth, train, channels_last):
    masked, packed = pair(depth, drop_path_rate=0.1)
    masked.train(train), packed.train(train)
    inputs = torch.randn(3, 3, 64, 96, dtype=torch.float64)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    mask = random_mask(3, 2, 3, keep=4)
    upstream = None
    results = []
    for model, kwargs in ((masked, {}), (packed, dict(num_visible=4))):
        x = inputs.clone().requires_grad_()
        torch.manual_seed(1)  # the same drop-path draws
        outs = model(x, mask, **kwargs)
        upstream = upstream or [torch.randn_like(o) for o in outs]
        torch.autograd.backward(outs, upstream)
        results.append((outs, x.grad, [p.grad for p in model.parameters()],
                        list(model.buffers())))
    (outs_a, dx_a, grads_a, bufs_a), (outs_b, dx_b, grads_b, bufs_b) = results
    for a, b in zip(outs_a, outs_b):
        assert a.shape == b.shape
        assert_rel_close(b, a, 1e-9)
    assert_rel_close(dx_b, dx_a, 1e-9)
    for a, b in zip(grads_a, grads_b):
        assert_rel_close(b, a, 1e-9)
    for a, b in zip(bufs_a, bufs_b):
        assert torch.allclose(b.double(), a.double(), rtol=1e-9, atol=1e-12)
    if train:
        assert masked.layer4[0].bn1.num_batches_tracked == 1


def test_host_count_equals_given_count_and_mask_none_is_all_visible():
    masked, packed = pair(18)
    inputs = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    mask = random_mask(2, 2, 2, keep=3)
    counted, given = packed(inputs, mask), packed(inputs, mask, num_visible=3)
    for a, b in zip(counted, given):
        assert torch.equal(a, b)
    for a, b in zip(masked(inputs), packed(inputs)):
        assert_rel_close(b, a, 1e-9)


def test_bad_masks_and_options_are_named():
    packed = HGKDSparseResNet(18, backend='packed')
    inputs = torch.randn(2, 3, 64, 64)
    unequal = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.bool)
    with pytest.raises(ValueError, match='same number of visible cells.*got \\[1, 2\\]'):
        packed(inputs, unequal)
    with pytest.raises(RuntimeError, match='num_visible=2'):
        packed(inputs, unequal, num_visible=2)
    with pytest.raises(ValueError, match='num_visible must be in \\[1, 4\\]'):
        packed(inputs, unequal, num_visible=0)
    with pytest.raises(ValueError, match='num_visible must be in \\[1, 4\\], got 0'):
        packed(inputs, torch.zeros(2, 2, 2, dtype=torch.bool))  # nothing visible
    with pytest.raises(ValueError, match="norm_impl='triton'.*backend='packed'"):
        HGKDSparseResNet(18, backend='packed', norm_impl='triton')
