"""DistillVisualizationHook: drawing during training leaves the weights bit for bit as
without it; with TensorBoard or W&B (offline) on, as README switches them, the scalars and
the pictures are read back from the backend's own files."""
from __future__ import annotations

import contextlib
import io
import json
import re
import struct

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

from hgkd_mm.engine import DistillVisualizationHook
from hgkd_mm.engine import visualization_hook

from demo_setup import write_demo_setup
from helpers import load_tool, run_tool

HOOK = dict(type='DistillVisualizationHook', interval=1, mask_seed=3)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp('distill_hook')
    return folder, write_demo_setup(folder)


def train(config, work_dir, hook=None):
    """Two iterations in this process; the model's final state."""
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = work_dir.name
    if hook is not None:
        cfg.default_hooks.distill_vis = hook
    runner = Runner.from_cfg(cfg)
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:  # bitwise; BatchNorm running statistics and counters included
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_training_is_unchanged(setup, monkeypatch):
    folder, config = setup
    images = str(folder / 'images' / 'x')
    without = train(config, folder / 'off')
    drawn = train(config, folder / 'on', dict(HOOK, images=[images]))
    assert_same_weights(without, drawn)
    pictures = sorted(p.name for p in (folder / 'on').glob('*/vis_data/vis_image/*.png'))
    assert pictures == [f'distill_{i}_{step}.png' for i in range(4) for step in (1, 2)]

    # the comparison sees a hook that draws in training mode (BatchNorm updates its
    # running statistics; drop path and the masks draw from the global RNG)
    monkeypatch.setattr(visualization_hook, 'evaluating', lambda model: torch.no_grad())
    leaky = train(config, folder / 'leaky', dict(HOOK, images=[images]))
    with pytest.raises(AssertionError):
        assert_same_weights(without, leaky)


def test_refused_by_name(setup):
    folder, _ = setup
    with pytest.raises(FileNotFoundError, match=r'image .*nothing\.png: no such file'):
        DistillVisualizationHook(interval=5, images=[str(folder / 'nothing.png')])
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        DistillVisualizationHook(interval=0, images=str(folder / 'images'))
    with pytest.raises(ValueError, match='img_size must be a multiple of 32'):
        DistillVisualizationHook(interval=1, images=str(folder / 'images'), img_size=48)
    with pytest.raises(ValueError, match='images is empty'):
        DistillVisualizationHook(interval=1, images=[])


def train_with_backend(config, work_dir, image, backend, env=None):
    """``tools/train.py`` for two iterations with ``backend`` and the hook drawing ``image``
    after the second; the values its text log printed, per iteration."""
    run_tool(['tools/train.py', config, '--work-dir', work_dir, '--cfg-options',
              f'visualizer.vis_backends.0.type={backend}',
              'default_hooks.distill_vis.type=DistillVisualizationHook',
              'default_hooks.distill_vis.interval=2', 'default_hooks.distill_vis.mask_seed=3',
              f'default_hooks.distill_vis.images=[{image}]'], threads=2, check=True, env=env)
    (text_log, ) = work_dir.glob('*/*.log')  # as printed (4 digits)
    printed = [dict(re.findall(r'(\w+): ([-+.e\d]+)', line))
               for line in text_log.read_text().splitlines() if 'Epoch(train)' in line]
    assert len(printed) == 2
    return printed


def test_tensorboard_scalars_and_pictures(setup):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    folder, config = setup
    work_dir = folder / 'tensorboard'
    image = folder / 'images' / 'x' / '2.png'
    printed = train_with_backend(config, work_dir, image, 'TensorboardVisBackend')
    (events, ) = work_dir.glob('*/vis_data/events.out.tfevents.*')
    log = EventAccumulator(str(events), size_guidance={'images': 0, 'scalars': 0})
    log.Reload()
    assert {'loss', 'loss_feat', 'lr', 'grad_norm'} <= set(log.Tags()['scalars'])
    for key in ('loss_feat', 'lr', 'grad_norm'):
        values = [(e.step, e.value) for e in log.Scalars(key)]
        assert values == [(step, pytest.approx(float(line[key]), rel=1e-3))
                          for step, line in enumerate(printed, 1)]
    assert log.Tags()['images'] == ['distill_2']
    (picture, ) = log.Images('distill_2')  # interval 2: after the second iteration only
    assert picture.step == 2
    drawn = np.asarray(Image.open(io.BytesIO(picture.encoded_image_string)).convert('RGB'))

    # the same picture as the tool draws from the checkpoint saved after that iteration
    tool = load_tool('analysis_tools/visualize_distill.py')
    with contextlib.redirect_stdout(io.StringIO()):
        tool.main([str(config), str(work_dir / 'epoch_1.pth'), str(image), '--out-dir',
                   str(folder / 'tool'), '--mask-seed', '3'])
    expected = np.asarray(Image.open(folder / 'tool' / '2.png'))
    assert drawn.shape == expected.shape
    assert (drawn != expected).any(-1).mean() < 0.01  # float rounding may move a colour


def wandb_records(path):
    """The protobuf records of a W&B offline run file: a 7-byte W&B header, then LevelDB's
    log format (32 KiB blocks; 7-byte record headers: crc32, length, type FULL=1, FIRST=2,
    MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:4] == b':W&B', path
    pos, block, parts = 7, 32768, b''
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = struct.unpack('<HB', data[pos + 4:pos + 7]) if left >= 7 else (0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record
            parts = b''


def test_wandb_offline_scalars_and_pictures(setup):
    folder, config = setup
    work_dir = folder / 'wandb'
    image = folder / 'images' / 'x' / '2.png'
    printed = train_with_backend(config, work_dir, image, 'WandbVisBackend',
                                 env=dict(WANDB_MODE='offline', WANDB_SILENT='true'))
    (run_file, ) = work_dir.glob('*/vis_data/wandb/offline-run-*/run-*.wandb')
    rows = [{item.key or '/'.join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
            for record in wandb_records(run_file) if record.HasField('history')]
    scalars = [row for row in rows if 'loss_feat' in row]
    assert len(scalars) == 2
    for key in ('loss_feat', 'lr', 'grad_norm'):
        assert [row[key] for row in scalars] == [pytest.approx(float(line[key]), rel=1e-3)
                                                 for line in printed]
    (picture, ) = [row for row in rows if 'distill_2/path' in row]
    drawn = np.asarray(Image.open(run_file.parent / 'files' / picture['distill_2/path']))
    assert drawn.shape[:2] == (picture['distill_2/height'], picture['distill_2/width'])
    assert drawn.shape[1] > 4 * drawn.shape[0]  # one row of five panels
