"""The sparse student against mmpretrain's own SparseResNet and dense ResNet."""
import pytest
import torch
from mmcv.cnn.bricks import DropPath
from mmengine.registry import DefaultScope

from mmpretrain.models.backbones import ResNet, SparseResNet
from mmpretrain.models.utils.sparse_modules import SparseHelper

from hgkd_mm.models.backbones import HGKDSparseResNet
from helpers import random_mask


def randomize_norms(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if name.endswith(('bn1.weight', 'bn2.weight', 'bn3.weight', 'downsample.1.weight')):
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
        elif name.endswith(('bn1.bias', 'bn2.bias', 'bn3.bias', 'downsample.1.bias')):
            tensor.copy_(0.2 * torch.randn(tensor.shape, generator=g))


def assert_rel_close(a, b, rel):
    err = (a - b).abs().max() / b.abs().max()
    assert err < rel, f'relative error {err:.3g} >= {rel}'


@pytest.mark.parametrize('depth,backend', [(18, 'masked'), (50, 'masked'), (50, 'packed')])
def test_matches_mmpretrain_sparse_resnet_float64(depth, backend):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        reference = SparseResNet(depth, out_indices=(0, 1, 2, 3),
                                 norm_cfg=dict(type='SparseBatchNorm2d')).double()
    randomize_norms(reference)
    student = HGKDSparseResNet(depth, backend=backend).double()
    student.load_state_dict(reference.state_dict(), strict=True)
    reference.train(), student.train()

    # mmpretrain's SparseHelper assumes square inputs
    inputs = torch.randn(3, 3, 96, 96, dtype=torch.float64)
    mask = random_mask(3, 3, 3, keep=4)
    SparseHelper._cur_active = mask[:, None]  # mmpretrain's global mask
    try:
        expected = reference(inputs * mask[:, None].repeat_interleave(32, 2).repeat_interleave(32, 3))
    finally:
        SparseHelper._cur_active = None
    got = student(inputs, mask)
    assert len(got) == 4
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert_rel_close(g, e, 1e-9)
    # running statistics follow the same (unbiased) update as BatchNorm1d
    ref_state, state = reference.state_dict(), student.state_dict()
    for key in ('bn1.running_var', 'layer4.0.bn1.running_mean', 'layer4.0.bn1.running_var'):
        assert_rel_close(state[key], ref_state[key], 1e-9)


@pytest.mark.parametrize('train,backend', [(False, 'masked'), (True, 'masked'),
                                           (True, 'packed')])
def test_all_visible_equals_dense_resnet(train, backend):
    # with mmcv's DropPath in training: the student scales the same draws in its residual add
    drop = dict(drop_path_rate=0.2) if train else {}
    dense = ResNet(50, out_indices=(0, 1, 2, 3), **drop).double()
    randomize_norms(dense)
    for name, buf in dense.named_buffers():
        if name.endswith('running_var'):
            buf.uniform_(0.5, 2)
        elif name.endswith('running_mean'):
            buf.normal_(0, 0.1)
    student = HGKDSparseResNet(50, backend=backend, **drop).double()
    student.load_state_dict(dense.state_dict(), strict=True)
    dense.train(train), student.train(train)
    inputs = torch.randn(4, 3, 64, 96, dtype=torch.float64)
    results = []
    for model in (student, dense):
        x = inputs.clone().requires_grad_()
        torch.manual_seed(2)  # the same drop-path draws
        outs = model(x)
        torch.autograd.backward(outs, [o.detach().cos() for o in outs])
        results.append((outs, x.grad))
    (outs, dx), (ref_outs, ref_dx) = results
    for g, e in zip(outs, ref_outs):
        assert_rel_close(g, e, 1e-9)
    assert_rel_close(dx, ref_dx, 1e-9)
    if train:  # the draws dropped paths: without them the output differs
        for module in dense.modules():
            if isinstance(module, DropPath):
                module.eval()
        torch.manual_seed(2)
        assert not torch.allclose(dense(inputs)[-1], ref_outs[-1])


def test_masked_positions_are_zero_and_inference_works_without_setup():
    student = HGKDSparseResNet(18)
    student.eval()
    mask = random_mask(2, 2, 2, keep=2)
    outs = student(torch.randn(2, 3, 64, 64), mask)
    for out in outs:
        visible = torch.nn.functional.interpolate(mask[:, None].float(), size=out.shape[-2:])
        assert (out * (1 - visible)).abs().max() == 0
        assert (out * visible).abs().max() > 0


def test_bad_input_size_and_mask():
    student = HGKDSparseResNet(18)
    with pytest.raises(ValueError, match='multiple of the mask cell 32'):
        student(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match='mask shape'):
        student(torch.randn(1, 3, 64, 64), torch.ones(1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match='backend'):
        HGKDSparseResNet(18, backend='dense')


@pytest.mark.parametrize('backend', ['masked', 'packed'])
def test_mask_cell_64_matches_mmpretrain_sparse_resnet_float64(backend):
    """A 64 px cell is 2x2 stride-32 positions: against mmpretrain's SparseResNet under
    the same pixels masked (its mask on the stride-32 grid, each cell repeated)."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        reference = SparseResNet(18, out_indices=(0, 1, 2, 3),
                                 norm_cfg=dict(type='SparseBatchNorm2d')).double()
    randomize_norms(reference)
    student = HGKDSparseResNet(18, backend=backend, mask_cell=64).double()
    student.load_state_dict(reference.state_dict(), strict=True)
    reference.train(), student.train()
    inputs = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    assert student.grid_size(inputs) == (2, 2)
    # two visible cells per sample (the packed backend's condition, as H-GKD draws them)
    mask = torch.tensor([[[True, False], [False, True]], [[False, True], [True, False]]])
    fine = mask.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (2, 4, 4)
    SparseHelper._cur_active = fine[:, None]
    try:
        expected = reference(inputs * fine[:, None].repeat_interleave(32, 2)
                             .repeat_interleave(32, 3))
    finally:
        SparseHelper._cur_active = None
    got = student(inputs, mask)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert_rel_close(g, e, 1e-9)
    ref_state, state = reference.state_dict(), student.state_dict()
    assert_rel_close(state['layer4.0.bn1.running_var'], ref_state['layer4.0.bn1.running_var'],
                     1e-9)


def test_mask_cell_refusals():
    with pytest.raises(ValueError, match=r'backbone.mask_cell=48 must be a multiple of the '
                                         r'student stride 32'):
        HGKDSparseResNet(18, mask_cell=48)
    student = HGKDSparseResNet(18, mask_cell=64)
    with pytest.raises(ValueError, match=r'input size 96x128 must be a multiple of the mask '
                                         r'cell 64 \(backbone.mask_cell\)'):
        student.grid_size(torch.zeros(1, 3, 96, 128))
    with pytest.raises(ValueError, match=r'must be \(B, H/64, W/64\)'):
        student(torch.randn(1, 3, 128, 128), torch.ones(1, 4, 4, dtype=torch.bool))
