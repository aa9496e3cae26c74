"""tools/test.py evaluates and dumps the predictions of a checkpoint on CPU."""
import mmengine
from helpers import EPOCHS_2, run_tool, write_cls_config


def test_test_py_on_checkpoint(tmp_path, image_folder, trained_2_epochs):
    config = write_cls_config(tmp_path / 'tiny_cls.py', image_folder, EPOCHS_2)
    out = tmp_path / 'predictions.pkl'
    result = run_tool(['tools/test.py', config, trained_2_epochs / 'epoch_2.pth',
                       '--work-dir', tmp_path / 'work', '--out', out], check=True)
    assert 'accuracy/top1' in result.stdout + result.stderr
    predictions = mmengine.load(out)
    assert len(predictions) == 8 and 'pred_score' in predictions[0]
