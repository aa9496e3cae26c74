"""A NaN/Inf loss or gradient norm stops training in that iteration, naming it, its loss
terms and the last checkpoint; no non-finite checkpoint is written; an option skips a
bounded number of such steps."""
import math

import pytest
import torch
from fault_setup import image_folder, run, train_command, weights, write_config

from hgkd_mm.engine import NonFiniteGuardHook


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp('nan') / 'images')


def assert_finite_checkpoints(work_dir):
    for path in work_dir.glob('*.pth'):
        assert all(torch.isfinite(v).all() for v in weights(path).values()
                   if v.is_floating_point()), path


def test_nan_stops_in_its_iteration_naming_terms_and_last_checkpoint(images, tmp_path):
    # iteration 6 is the 2nd of epoch 2: epoch_1.pth is saved, epoch_2.pth must not be
    config = write_config(tmp_path / 'nan.py', images,
                          extra_hooks=[dict(type='InjectNaNHook', iterations=[6])])
    result = run(train_command(config, tmp_path / 'work'))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert 'NonFiniteLossError: non-finite loss or gradient norm at iteration 6 (epoch 2)' \
        in message
    assert 'loss=nan' in message and 'train/grad_norm=nan' in message
    last = tmp_path / 'work' / 'epoch_1.pth'
    assert f'last checkpoint saved: {last} (resume with --resume {last})' in message
    assert sorted(p.name for p in (tmp_path / 'work').glob('*.pth')) == ['epoch_1.pth']
    assert_finite_checkpoints(tmp_path / 'work')


def test_a_diverging_learning_rate_stops_without_a_nan_checkpoint(images, tmp_path):
    config = write_config(tmp_path / 'lr.py', images, lr=1e12)
    result = run(train_command(config, tmp_path / 'work'))
    assert result.returncode != 0
    assert 'non-finite loss or gradient norm at iteration' in result.stderr
    assert_finite_checkpoints(tmp_path / 'work')


def test_skips_a_bounded_number_of_non_finite_steps(images, tmp_path):
    guard = dict(type='NonFiniteGuardHook', max_skipped_steps=2)
    config = write_config(tmp_path / 'skip.py', images, extra_hooks=[
        guard, dict(type='InjectNaNHook', iterations=[3, 7])])
    result = run(train_command(config, tmp_path / 'work'))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    skips = [line for line in log.splitlines() if 'skipped the optimizer step' in line]
    assert len(skips) == 2
    assert 'iteration 3 (epoch 1)' in skips[0] and '1 of max_skipped_steps=2' in skips[0]
    assert 'iteration 7 (epoch 2)' in skips[1] and '2 of max_skipped_steps=2' in skips[1]
    assert_finite_checkpoints(tmp_path / 'work')

    config = write_config(tmp_path / 'skip3.py', images, extra_hooks=[
        guard, dict(type='InjectNaNHook', iterations=[3, 7, 9])])
    result = run(train_command(config, tmp_path / 'work3'))
    assert result.returncode != 0
    assert ('at iteration 9 (epoch 3)' in result.stderr
            and '2 non-finite steps skipped already, max_skipped_steps=2' in result.stderr)
    assert_finite_checkpoints(tmp_path / 'work3')


def test_a_skipped_step_leaves_weights_and_optimizer_state_unchanged():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    hook = NonFiniteGuardHook(max_skipped_steps=1)
    step = hook._guard_step(optimizer, optimizer.step)
    model(torch.ones(1, 3)).sum().backward()
    step()
    before = ([p.clone() for p in model.parameters()],
              [s['exp_avg'].clone() for s in optimizer.state.values()])
    model.zero_grad()
    (model(torch.ones(1, 3)).sum() * math.inf).backward()
    step()
    assert hook._skipped
    assert all(torch.equal(a, b) for a, b in zip(before[0], model.parameters()))
    assert all(torch.equal(a, s['exp_avg']) for a, s in zip(before[1], optimizer.state.values()))


@pytest.mark.parametrize('bad', [-1, 1.5, True, '2'])
def test_max_skipped_steps_is_checked(bad):
    with pytest.raises(ValueError, match='max_skipped_steps must be an int >= 0'):
        NonFiniteGuardHook(max_skipped_steps=bad)
