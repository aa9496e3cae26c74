"""The longer kill sweep (``pytest -m slow``): tools/train.py SIGKILLed at many moments,
every one followed by ``--resume``, must end bitwise equal to the uninterrupted run.

Kill points: a fixed spread of delays after each epoch's first logged iteration (so the
kill lands in training, in the dataloader, in a save or between), plus kills inside each
checkpoint write (the slow-write variant). Prints one line per kill and a summary, the
figures docs/robustness.md reports.
"""
import pytest
from fault_setup import (EPOCHS, assert_bitwise_equal, image_folder, run, run_and_kill,
                         train_command, write_config)

pytestmark = pytest.mark.slow

DELAYS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0)


def kill_points():
    for epoch in range(1, EPOCHS + 1):
        for delay in DELAYS:
            yield dict(marker=f'Epoch(train) [{epoch}][1/4]', delay=delay)
    for save in range(1, EPOCHS + 1):
        yield dict(marker='SAVING', occurrence=save, delay=0.3, slow_save=True)


def test_kill_sweep(tmp_path):
    config = write_config(tmp_path / 'tiny.py', image_folder(tmp_path / 'images'))
    baseline = tmp_path / 'baseline'
    assert run(train_command(config, baseline)).returncode == 0
    failures = []
    points = list(kill_points())
    for number, point in enumerate(points):
        work_dir = tmp_path / f'kill{number}'
        slow_save = point.pop('slow_save', False)
        try:
            run_and_kill(train_command(config, work_dir, slow_save=slow_save), **point)
        except AssertionError:  # ended before the kill point: nothing to resume
            print(f'kill {number} {point}: run ended first')
            continue
        result = run(train_command(config, work_dir, '--resume'))
        try:
            assert result.returncode == 0, result.stderr[-2000:]
            assert_bitwise_equal(work_dir / f'epoch_{EPOCHS}.pth',
                                 baseline / f'epoch_{EPOCHS}.pth')
            print(f'kill {number} {point}: resumed bitwise')
        except AssertionError as error:
            failures.append((point, str(error)[:300]))
            print(f'kill {number} {point}: FAILED {error}')
    print(f'kill sweep: {len(points)} kills, {len(points) - len(failures)} survived')
    assert not failures
