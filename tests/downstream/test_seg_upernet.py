"""configs/seg: UperNet from a converted H-GKD ResNet-50 trains on the ADE20K sample and is
evaluated with mIoU; the backbone loads with no missing keys; tools/test.py evaluates the
checkpoint again and writes the prediction maps."""
from downstream_setup import assert_backbone_loaded, assert_miou, tiny_seg_config, tool_log
from helpers import run_tool


def test_train_2_iters_and_miou(tmp_path, dense_r50):
    config = tiny_seg_config(tmp_path / 'seg.py', dense_r50)
    work_dir = tmp_path / 'work'
    result = run_tool(['tools/train.py', config, '--work-dir', work_dir], timeout=900, threads=2)
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert_backbone_loaded(log, dense_r50)
    assert_miou(log, work_dir)
    assert (work_dir / 'iter_2.pth').exists()

    out = tmp_path / 'maps'
    result = run_tool(['tools/test.py', config, work_dir / 'iter_2.pth',
                       '--work-dir', tmp_path / 'test', '--out', out], timeout=900, threads=2)
    log = tool_log(result)
    assert result.returncode == 0, log[-4000:]
    assert_miou(log, tmp_path / 'test')
    assert len(list(out.glob('*.png'))) == 3  # one map per validation image
