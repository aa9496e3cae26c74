"""tools/analysis_tools/plot_curves.py on scalars.json files written by mmengine's
LocalVisBackend: curves by iteration and epoch, resumed runs, overlaid runs, refused keys."""
from __future__ import annotations

import numpy as np
import pytest
from mmengine.visualization import LocalVisBackend
from PIL import Image

from hgkd_mm.visualization import plot_curves, read_scalars
from hgkd_mm.visualization.curves import curve

from helpers import load_tool

tool = load_tool('analysis_tools/plot_curves.py')
ITERS_PER_EPOCH = 4


def log_run(work_dir, timestamp, iters, loss, val_epochs=()):
    """``work_dir/<timestamp>/vis_data/scalars.json`` as mmengine's LoggerHook writes it:
    training scalars at ``step`` = iteration, validation metrics at ``step`` = epoch."""
    backend = LocalVisBackend(str(work_dir / timestamp / 'vis_data'))
    for it in iters:
        epoch = (it - 1) // ITERS_PER_EPOCH + 1
        backend.add_scalars(dict(lr=1e-3 / it, loss=loss(it), loss_feat=loss(it), epoch=epoch,
                                 iter=it), step=it)
    for epoch in val_epochs:
        backend.add_scalars({'accuracy/top1': 10.0 * epoch}, step=epoch)


@pytest.fixture
def runs(tmp_path):
    # run a: 8 iterations, stopped after 6 and resumed from iteration 4 (a new timestamp)
    log_run(tmp_path / 'a', '20260101_000000', range(1, 7), lambda it: 1.0 / it)
    log_run(tmp_path / 'a', '20260101_010000', range(5, 9), lambda it: 2.0 / it,
            val_epochs=[1, 2])
    log_run(tmp_path / 'b', '20260102_000000', range(1, 9), lambda it: 0.5 / it)
    return tmp_path


def test_curves_by_iteration_and_epoch(runs):
    records = read_scalars(str(runs / 'a'))
    xs, ys = curve(records, 'loss_feat', 'iter')
    # the resumed run's iterations 5 and 6 replace the first run's
    expected = [1.0 / it for it in range(1, 5)] + [2.0 / it for it in range(5, 9)]
    np.testing.assert_allclose(xs, np.arange(1, 9))
    np.testing.assert_allclose(ys, expected)
    xs, ys = curve(records, 'loss_feat', 'epoch')
    np.testing.assert_allclose(xs, [1, 2])
    np.testing.assert_allclose(ys, [np.mean(expected[:4]), np.mean(expected[4:])])
    xs, ys = curve(records, 'accuracy/top1', 'epoch')  # validation: at its epoch
    np.testing.assert_allclose(xs, [1, 2])
    np.testing.assert_allclose(ys, [10, 20])
    # one json file is one run's part
    only = read_scalars(str(runs / 'a' / '20260101_000000' / 'vis_data' / 'scalars.json'))
    np.testing.assert_allclose(curve(only, 'loss', 'iter')[1], [1.0 / it for it in range(1, 7)])


def test_runs_overlaid(runs):
    figure = plot_curves({'a': read_scalars(str(runs / 'a')), 'b': read_scalars(str(runs / 'b'))},
                         ['loss_feat', 'lr'], 'iter')
    loss_axes, lr_axes = figure.axes
    assert [line.get_label() for line in loss_axes.lines] == ['a', 'b']
    np.testing.assert_allclose(loss_axes.lines[1].get_ydata(), [0.5 / it for it in range(1, 9)])
    np.testing.assert_allclose(lr_axes.lines[0].get_ydata(), [1e-3 / it for it in range(1, 9)])
    assert loss_axes.get_ylabel() == 'loss_feat' and lr_axes.get_xlabel() == 'iter'


def test_tool_writes_the_picture(runs, tmp_path):
    out = tmp_path / 'plots' / 'curves.png'
    tool.main([str(runs / 'a'), str(runs / 'b' / '20260102_000000' / 'vis_data' / 'scalars.json'),
               '--keys', 'loss_feat', 'lr', 'accuracy/top1', '--x', 'epoch', '--out', str(out)])
    picture = np.asarray(Image.open(out))
    assert picture.shape[0] == 3 * 280 and picture.std() > 1  # three panels, 2.8 in each
    assert tool.run_labels([str(runs / 'a'), str(runs / 'b' / '20260102_000000' / 'vis_data' /
                                                 'scalars.json')]) == ['a', 'b']


def test_refused_by_name(runs, tmp_path, capsys):
    with pytest.raises(SystemExit, match=r'--keys loss_sim: not in the log of any run \(logged: '
                                         r'accuracy/top1, loss, loss_feat, lr\)'):
        tool.main([str(runs / 'a'), '--keys', 'loss_feat', 'loss_sim'])
    with pytest.raises(SystemExit, match='accuracy/top1: logged only by epoch'):
        tool.main([str(runs / 'a'), '--keys', 'accuracy/top1', '--out', str(tmp_path / 'c.png')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit, match='empty: no scalars.json under this folder'):
        tool.main([str(tmp_path / 'empty'), '--keys', 'lr', '--out', str(tmp_path / 'd.png')])
    for argv, message in (([str(tmp_path / 'missing'), '--keys', 'lr'],
                           'missing: no such work dir or scalars.json'),
                          ([str(runs / 'a'), '--keys', 'lr', '--out', str(tmp_path)],
                           'is a folder'),
                          ([str(runs / 'a'), '--keys', 'lr', '--out', 'curves.txt'],
                           'give a file ending in one of')):
        with pytest.raises(SystemExit):
            tool.main(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / 'c.png').exists() and not (tmp_path / 'd.png').exists()


def test_a_line_that_is_not_json_is_named(tmp_path):
    scalars = tmp_path / 'scalars.json'
    scalars.write_text('{"loss": 1.0, "iter": 1}\n\n{"loss": 0.5, "iter": 2}\n')
    assert [r['loss'] for r in read_scalars(str(scalars))] == [1.0, 0.5]  # blank lines skipped
    scalars.write_text('{"loss": 1.0, "iter": 1}\n{"loss": 0.5, "it\n')
    with pytest.raises(ValueError, match=r'scalars.json, line 2: not JSON'):
        read_scalars(str(scalars))
    with pytest.raises(FileNotFoundError, match='missing: no such work dir or scalars.json'):
        read_scalars(str(tmp_path / 'missing'))


def test_an_unknown_x_axis_is_refused(runs):
    with pytest.raises(ValueError, match="x must be one of .*, got 'step'"):
        plot_curves({'a': read_scalars(str(runs / 'a'))}, ['loss'], x='step')
