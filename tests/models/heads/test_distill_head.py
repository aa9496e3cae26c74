"""HGKDDistillHead: every target norm, loss and loss position set against hand-written
references (torch.nn modules, boolean selection, numpy), and the L_sim term."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hgkd_mm.models.heads.distill_head import HGKDDistillHead, pearson

D = 8  # teacher width; the decoder width is D too, so proj can be the identity


def identity_head(**kwargs) -> HGKDDistillHead:
    head = HGKDDistillHead(in_channels=D, target_dims=D, **kwargs)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(D)[..., None, None])
        head.proj.bias.zero_()
    return head


def example(seed: int = 0):
    """Predictions and teacher tokens on a 4x4 grid, a stride-32 mask on a 2x2 grid
    (float32 as in training; the references compute in float64)."""
    generator = torch.Generator().manual_seed(seed)
    pred = torch.randn(2, D, 4, 4, generator=generator)
    tokens = torch.randn(2, D, 4, 4, generator=generator) * 3 + 1
    mask = torch.tensor([[[True, False], [False, True]], [[False, False], [True, False]]])
    return pred, tokens, mask


def visible_grid(mask: torch.Tensor) -> torch.Tensor:
    """Each stride-32 cell covers 2x2 tokens: ``(B, 4, 4)`` bool."""
    return mask.repeat_interleave(2, 1).repeat_interleave(2, 2)


def tokens_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, D, H, W)`` -> ``(B, H, W, D)``."""
    return x.permute(0, 2, 3, 1)


def reference_target(tokens: torch.Tensor, norm: str) -> torch.Tensor:
    """``(B, D, H, W)`` -> normalised ``(B, H, W, D)``, float64."""
    tokens = tokens.double()
    if norm == 'layernorm':
        layer_norm = nn.LayerNorm(D, elementwise_affine=False).double()
        return layer_norm(tokens_last(tokens))
    if norm == 'batchnorm':
        batch_norm = nn.BatchNorm1d(D, affine=False, track_running_stats=False).double()
        rows = batch_norm(tokens_last(tokens).reshape(-1, D))
        return rows.reshape(2, 4, 4, D)
    return tokens_last(tokens)


def reference_per_token(pred: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """``(B, H, W, D)`` each -> ``(B, H, W)``."""
    if loss == 'mse':
        return nn.MSELoss(reduction='none')(pred, target).mean(-1)
    if loss == 'smooth_l1':
        return nn.SmoothL1Loss(reduction='none')(pred, target).mean(-1)
    dot = (pred * target).sum(-1)
    return 1 - dot / (pred.norm(dim=-1) * target.norm(dim=-1))


@pytest.mark.parametrize('norm', ['layernorm', 'batchnorm', 'none'])
@pytest.mark.parametrize('loss', ['mse', 'smooth_l1', 'cosine'])
@pytest.mark.parametrize('loss_on', ['masked', 'visible', 'all', 'weighted'])
def test_loss_matches_reference(norm, loss, loss_on):
    pred, tokens, mask = example()
    head = identity_head(target_norm=norm, loss=loss, loss_on=loss_on, visible_weight=0.25)
    actual = head.loss(pred, [tokens], mask)['loss_feat']

    per_token = reference_per_token(tokens_last(pred.double()), reference_target(tokens, norm),
                                    loss)
    visible = visible_grid(mask)
    if loss_on == 'masked':
        expected = per_token[~visible].mean()
    elif loss_on == 'visible':
        expected = per_token[visible].mean()
    elif loss_on == 'all':
        expected = per_token.mean()
    else:
        weighted = per_token[~visible].sum() + 0.25 * per_token[visible].sum()
        expected = weighted / ((~visible).sum() + 0.25 * visible.sum())
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-6)


def test_default_loss_ignores_visible_positions():
    pred, tokens, mask = example()
    head = identity_head()
    base = head.loss(pred, [tokens], mask)['loss_feat']
    visible = visible_grid(mask)
    changed = pred.clone()
    changed[0][:, visible[0]] = 0  # sample 0's visible tokens
    assert head.loss(changed, [tokens], mask)['loss_feat'] == base
    changed = pred.clone()
    changed[0, :, 0, 2] += 1  # a masked token of sample 0
    assert head.loss(changed, [tokens], mask)['loss_feat'] != base


def test_several_teacher_layers_average_their_normalised_targets():
    pred, tokens, mask = example()
    other = example(seed=1)[1]
    head = identity_head(loss_on='all')
    target = (reference_target(tokens, 'layernorm') + reference_target(other, 'layernorm')) / 2
    expected = reference_per_token(tokens_last(pred.double()), target, 'mse').mean()
    torch.testing.assert_close(head.loss(pred, [tokens, other], mask)['loss_feat'],
                               expected.float(), rtol=1e-5, atol=1e-6)


def test_pearson_matches_numpy():
    a, b = torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 10, dtype=torch.float64)
    expected = [np.corrcoef(x, y)[0, 1] for x, y in zip(a.numpy(), b.numpy())]
    np.testing.assert_allclose(pearson(a, b).numpy(), expected, rtol=1e-7)


def test_sim_loss_matches_reference_and_fills_the_queue_in_order():
    pred, tokens, mask = example()
    head = identity_head(sim=dict(queue_size=5, temperature=0.5, weight=2.0))
    queue = F.normalize(torch.randn(5, D), dim=1)
    head.queue.copy_(queue)

    losses = head.loss(pred, [tokens], mask)
    queue = queue.double()
    student = F.normalize(pred.double().mean((2, 3)), dim=1)
    teacher = F.normalize(reference_target(tokens, 'layernorm').mean((1, 2)), dim=1)
    p_student = torch.softmax(student @ queue.T / 0.5, 1).numpy()
    p_teacher = torch.softmax(teacher @ queue.T / 0.5, 1).numpy()
    correlation = [np.corrcoef(s, t)[0, 1] for s, t in zip(p_student, p_teacher)]
    expected = 2.0 * (1 - np.mean(correlation))
    np.testing.assert_allclose(losses['loss_sim'].item(), expected, rtol=1e-5)

    # FIFO: the batch's teacher embeddings replace the oldest rows, wrapping around
    teacher = teacher.float()
    torch.testing.assert_close(head.queue[:2], teacher)
    torch.testing.assert_close(head.queue[2:], queue[2:].float())
    for _ in range(2):
        head.loss(pred, [tokens], mask)
    assert head.queue_ptr.item() == 6 % 5
    torch.testing.assert_close(head.queue[[4, 0]], teacher)  # third batch: rows 4 and 0


def test_sim_loss_is_float32_under_bf16_autocast_and_eval_keeps_the_queue():
    pred, tokens, mask = example()
    head = identity_head(sim=dict(queue_size=64, temperature=0.07)).eval()
    queue, ptr = head.queue.clone(), head.queue_ptr.clone()
    target = head.target([tokens])
    expected = head.sim_loss(pred, target)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        torch.testing.assert_close(head.sim_loss(pred, target), expected, rtol=1e-6, atol=1e-7)
    head.loss(pred, [tokens], mask)
    assert torch.equal(head.queue, queue) and torch.equal(head.queue_ptr, ptr)


@pytest.mark.parametrize('option', [dict(target_norm='l2'), dict(loss='l1'),
                                    dict(loss_on='unmasked')])
def test_bad_option_names_it(option):
    name, value = next(iter(option.items()))
    with pytest.raises(ValueError, match=f'head.{name} must be one of .*{value!r}'):
        HGKDDistillHead(in_channels=D, target_dims=D, **option)


def test_wrong_target_width_is_explained():
    pred, tokens, mask = example()
    head = HGKDDistillHead(in_channels=D, target_dims=D + 1)
    with pytest.raises(ValueError, match='head.target_dims must equal the teacher width'):
        head.loss(pred, [tokens], mask)


@pytest.mark.parametrize('option, message', [
    (dict(visible_weight=-0.1), 'head.visible_weight must be >= 0'),
    (dict(sim=dict(temprature=0.2)), r"head.sim: unknown \['temprature'\]"),
    (dict(sim=dict(queue_size=0)), 'head.sim.queue_size must be an int >= 1'),
    (dict(sim=dict(queue_size=8.0)), 'head.sim.queue_size must be an int >= 1'),
    (dict(sim=dict(temperature=0)), 'head.sim.temperature must be > 0'),
    (dict(sim=dict(weight=-1)), 'head.sim.weight must be >= 0'),
])
def test_bad_values_name_the_option(option, message):
    with pytest.raises(ValueError, match=message):
        HGKDDistillHead(in_channels=D, target_dims=D, **option)


def test_a_batch_larger_than_the_queue_keeps_its_newest_rows():
    head = HGKDDistillHead(in_channels=D, target_dims=D, sim=dict(queue_size=3))
    embeddings = torch.arange(5 * D, dtype=torch.float32).view(5, D)
    head._enqueue(embeddings)
    assert torch.equal(head.queue, embeddings[2:])  # no index written twice
    assert int(head.queue_ptr) == 0  # the next row replaces the oldest, row 2
