"""Crashes while training or saving lose nothing: kill -9 (also mid-write), resume bitwise
with persistent workers, one kept checkpoint, corrupt checkpoints named, disk full."""
from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from fault_setup import (EPOCHS, assert_bitwise_equal, image_folder, run, run_and_kill,
                         train_command, weights, write_config)

from hgkd_mm.engine import NonFiniteWeightsError
from hgkd_mm.utils import CheckpointReadError, check_resume_checkpoint, safe_load
from hgkd_mm.utils.checkpoint_io import PARTIAL_SUFFIX, atomic_write


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """(config, uninterrupted work dir): the baseline every resumed run must equal."""
    tmp = tmp_path_factory.mktemp('fault')
    config = write_config(tmp / 'tiny.py', image_folder(tmp / 'images'))
    result = run(train_command(config, tmp / 'baseline'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return config, tmp / 'baseline'


def last_checkpoint(work_dir):
    return (work_dir / 'last_checkpoint').read_text()


def resume_and_compare(config, work_dir, baseline):
    result = run(train_command(config, work_dir, '--resume'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert_bitwise_equal(work_dir / f'epoch_{EPOCHS}.pth', baseline / f'epoch_{EPOCHS}.pth')
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [f'epoch_{EPOCHS}.pth']
    assert not list(work_dir.glob(f'.*{PARTIAL_SUFFIX}'))
    return result.stdout + result.stderr


def test_kill_while_saving_keeps_the_previous_checkpoint_and_resumes_bitwise(setup, tmp_path):
    config, baseline = setup
    work_dir = tmp_path / 'work'
    # the 2nd save is epoch_2.pth; with max_keep_ckpts=1 mmengine had deleted epoch_1 by now
    run_and_kill(train_command(config, work_dir, slow_save=True), 'SAVING', occurrence=2,
                 delay=0.4)
    assert len(list(work_dir.glob(f'.epoch_2.pth.*{PARTIAL_SUFFIX}'))) == 1
    assert not (work_dir / 'epoch_2.pth').exists()
    assert last_checkpoint(work_dir) == str(work_dir / 'epoch_1.pth')
    assert safe_load(str(work_dir / 'epoch_1.pth'))['meta']['epoch'] == 1
    log = resume_and_compare(config, work_dir, baseline)
    assert 'left by a run stopped while saving' in log


@pytest.mark.parametrize('marker', ['Epoch(train) [3][2/4]', 'Saving checkpoint at 2 epochs'])
def test_kill_during_training_resumes_bitwise(setup, tmp_path, marker):
    config, baseline = setup
    work_dir = tmp_path / 'work'
    run_and_kill(train_command(config, work_dir), marker)
    resume_and_compare(config, work_dir, baseline)


def test_corrupt_checkpoint_stops_resume_naming_it_and_the_last_readable(setup, tmp_path):
    config, baseline = setup
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    good, bad = work_dir / 'epoch_3.pth', work_dir / 'epoch_4.pth'
    shutil.copy(baseline / f'epoch_{EPOCHS}.pth', good)
    data = good.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    (work_dir / 'last_checkpoint').write_text(str(bad))
    for extra in (['--resume'], ['--resume', bad]):  # named by last_checkpoint, or given
        result = run(train_command(config, work_dir, *extra))
        assert result.returncode != 0
        message = result.stderr.strip().splitlines()[-1]
        assert f'cannot read checkpoint {bad}: truncated' in message
        assert f'the last readable checkpoint is {good}' in message
    assert not (work_dir / 'epoch_5.pth').exists()


def test_check_resume_checkpoint_names_empty_or_dangling_pointers(setup, tmp_path):
    _, baseline = setup
    good = tmp_path / 'epoch_1.pth'
    shutil.copy(baseline / f'epoch_{EPOCHS}.pth', good)
    assert check_resume_checkpoint(str(tmp_path), None) is None  # no last_checkpoint: fresh
    (tmp_path / 'last_checkpoint').write_text(str(good))
    assert check_resume_checkpoint(str(tmp_path), None) == str(good)
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(CheckpointReadError, match=f'last_checkpoint is empty.*{good}'):
        check_resume_checkpoint(str(tmp_path), None)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'moved.pth'))
    with pytest.raises(CheckpointReadError, match='checkpoint not found: .*moved.pth.*'
                       f'last readable checkpoint is {good}'):
        check_resume_checkpoint(str(tmp_path), None)


def test_injected_enospc_while_saving_names_the_file_and_keeps_the_previous(setup, tmp_path):
    """ENOSPC from the disk in the middle of writing epoch_2.pth (half its bytes written)."""
    config, baseline = setup
    work_dir = tmp_path / 'work'
    result = run([sys.executable, '-c', textwrap.dedent(f"""
        import errno, runpy, sys
        from hgkd_mm.engine.checkpoint import AtomicLocalBackend
        from hgkd_mm.utils.checkpoint_io import atomic_write
        saves = []
        def put(self, obj, filepath):
            saves.append(filepath)
            with atomic_write(str(filepath)) as file:
                if len(saves) == 2:
                    file.write(obj[:len(obj) // 2])
                    raise OSError(errno.ENOSPC, 'No space left on device')
                file.write(obj)
        AtomicLocalBackend.put = put
        sys.argv = ['tools/train.py', {str(config)!r}, '--work-dir', {str(work_dir)!r}]
        runpy.run_path('tools/train.py', run_name='__main__')
        """)])
    assert result.returncode != 0
    assert (f'could not write checkpoint {work_dir}/epoch_2.pth: [Errno {errno.ENOSPC}] No '
            f'space left on device. The previous checkpoint {work_dir}/epoch_1.pth is '
            'unchanged') in result.stderr
    assert last_checkpoint(work_dir) == str(work_dir / 'epoch_1.pth')
    assert sorted(p.name for p in work_dir.iterdir() if p.suffix == '.pth') == ['epoch_1.pth']
    assert not list(work_dir.glob(f'.*{PARTIAL_SUFFIX}'))
    resume_and_compare(config, work_dir, baseline)


def test_full_filesystem_while_saving(setup, tmp_path):
    """A real full disk: the work dir on a tmpfs with room for one checkpoint and a half."""
    config, baseline = setup
    size = (baseline / f'epoch_{EPOCHS}.pth').stat().st_size
    work_dir = tmp_path / 'mnt' / 'work'
    work_dir.parent.mkdir()
    probe = subprocess.run(['unshare', '-rm', 'true'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip('unshare -rm (a user namespace to mount a tmpfs) is not allowed here')
    script = (f'mount -t tmpfs -o size={int(size * 1.5)} tmpfs {work_dir.parent} && '
              f'{" ".join(train_command(config, work_dir))}; '
              f'echo rc=$?; cp -r {work_dir} {tmp_path}/saved')
    result = run(['unshare', '-rm', 'sh', '-c', script])
    assert 'rc=0' not in result.stdout
    assert f'could not write checkpoint {work_dir}/epoch_2.pth' in result.stderr
    assert 'No space left on device' in result.stderr
    saved = tmp_path / 'saved'
    assert sorted(p.name for p in saved.glob('*.pth')) == ['epoch_1.pth']
    assert safe_load(str(saved / 'epoch_1.pth'))['meta']['epoch'] == 1
    assert last_checkpoint(saved) == str(work_dir / 'epoch_1.pth')


def test_atomic_write_killed_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / 'file.bin'
    target.write_bytes(b'old')
    code = textwrap.dedent(f"""
        import os, signal, sys
        from hgkd_mm.utils.checkpoint_io import atomic_write
        with atomic_write({str(target)!r}) as file:
            file.write(b'new' * 1000)
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    result = subprocess.run([sys.executable, '-c', code], capture_output=True)
    assert result.returncode == -9
    assert target.read_bytes() == b'old'
    partial, = tmp_path.glob(f'.file.bin.*{PARTIAL_SUFFIX}')
    with atomic_write(str(target)) as file:
        file.write(b'new')
    assert target.read_bytes() == b'new'


class ToyModel(BaseModel):
    """One weight vector; the loss is its dot product with the batch."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(inputs * self.weight).sum())  # inputs: (B, 2)


class PoisonAfterFirstSave(Hook):
    """NaN in a weight after epoch_1.pth is saved, as a diverged step would leave."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def after_train_epoch(self, runner):
        if runner.epoch == 0:
            runner.model.weight.data[0] = float('nan')


def test_non_finite_weights_are_never_saved(tmp_path):
    runner = Runner(model=ToyModel(), work_dir=str(tmp_path),
                    train_dataloader=dict(dataset=[dict(inputs=torch.ones(2))] * 4, batch_size=2,
                                          sampler=dict(type='DefaultSampler', shuffle=False),
                                          collate_fn=dict(type='default_collate')),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    train_cfg=dict(by_epoch=True, max_epochs=2),
                    default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1)),
                    custom_hooks=[PoisonAfterFirstSave()])
    with pytest.raises(NonFiniteWeightsError, match=r'not saving .*epoch_2.pth: NaN or Inf in 1 '
                       r'weights \(weight\). Last checkpoint saved: .*epoch_1.pth'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']
    assert torch.isfinite(weights(tmp_path / 'epoch_1.pth')['weight']).all()
