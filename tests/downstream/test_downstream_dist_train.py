"""tools/dist_train.sh with 2 CPU processes (gloo) on the det and seg configs: SyncBN falls
back to BN with a warning, the converted backbone loads, the metrics are computed; then
tools/dist_test.sh evaluates the trained detector and dumps its predictions."""
import pickle

import pytest
import torch

from downstream_setup import (assert_backbone_loaded, assert_coco_metrics, assert_miou,
                              tiny_det_config, tiny_seg_config, tool_log)
from helpers import free_port, run_tool

# These launch 2 processes: on CPU with gloo; a CUDA machine needs a GPU for each.
pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() < 2,
    reason='2 processes need 2 GPUs on a CUDA machine')


def dist_train(config, work_dir):
    result = run_tool(['tools/dist_train.sh', config, 2, '--work-dir', work_dir], timeout=900,
                      env=dict(PORT=str(free_port())))
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    assert 'No CUDA: torch/mmcv SyncBatchNorm needs a GPU' in log
    assert 'model.backbone.norm_cfg.type=SyncBN' in log
    return log


def test_dist_train_mask_rcnn(tmp_path, dense_r50):
    config = tiny_det_config(tmp_path / 'det.py', dense_r50, batch_size=1, val_images=2)
    log = dist_train(config, tmp_path / 'work')
    assert 'model.roi_head.bbox_head.norm_cfg.type=SyncBN' in log
    assert_backbone_loaded(log, dense_r50)
    assert_coco_metrics(log, tmp_path / 'work')

    out = tmp_path / 'predictions.pkl'
    result = run_tool(['tools/dist_test.sh', config, tmp_path / 'work' / 'iter_2.pth', 2,
                       '--work-dir', tmp_path / 'test', '--out', out], timeout=900,
                      env=dict(PORT=str(free_port())))
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log  # mmengine's env line, in test runs too
    assert_coco_metrics(log, tmp_path / 'test')
    predictions = pickle.loads(out.read_bytes())
    assert len(predictions) == 2  # the two validation images, gathered from both ranks
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(predictions[0]['pred_instances'])


def test_dist_train_upernet(tmp_path, dense_r50):
    # 2 images per process: the 1x1 pyramid-pooling branch needs 2 values per BN channel
    config = tiny_seg_config(tmp_path / 'seg.py', dense_r50, batch_size=2)
    log = dist_train(config, tmp_path / 'work')
    assert 'model.decode_head.norm_cfg.type=SyncBN' in log
    assert_backbone_loaded(log, dense_r50)
    assert_miou(log, tmp_path / 'work')
