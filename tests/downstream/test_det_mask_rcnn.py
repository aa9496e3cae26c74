"""configs/det: Mask R-CNN from a converted H-GKD ResNet-50 trains on coco-tiny and is
evaluated with the COCO metric (pycocotools); the backbone loads with no missing keys."""
from downstream_setup import assert_backbone_loaded, assert_coco_metrics, tiny_det_config, tool_log
from helpers import run_tool


def test_train_2_iters_and_coco_eval(tmp_path, dense_r50):
    config = tiny_det_config(tmp_path / 'det.py', dense_r50)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir], timeout=900, threads=2)
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert_backbone_loaded(log, dense_r50)
    assert_coco_metrics(log, work_dir)
    assert (work_dir / 'iter_2.pth').exists()
