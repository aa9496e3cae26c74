"""tools/dist_train.sh with 2 CPU processes (torchrun + gloo), SyncBN in the config."""
import time

from tiny_cls_setup import ITERS_2, run_tool, write_config


def test_dist_train_sh_two_cpu_processes(tmp_path, image_folder):
    config = write_config(tmp_path / 'tiny_cls_syncbn.py', image_folder, ITERS_2)
    work_dir = tmp_path / 'work'
    start = time.perf_counter()
    result = run_tool(['dist_train.sh', config, 2, '--work-dir', work_dir,
                       '--cfg-options', 'default_hooks.checkpoint.by_epoch=False'], timeout=900)
    elapsed = time.perf_counter() - start
    log = result.stdout + result.stderr
    assert 'Distributed training: True' in log
    assert 'model.backbone.norm_cfg.type=SyncBN' in log  # the replacement warning
    assert log.count('model.backbone.norm_cfg.type=SyncBN') == 1  # rank 0 only
    assert (work_dir / 'iter_2.pth').exists()
    assert elapsed < 90, f'2-process CPU training took {elapsed:.0f} s'
