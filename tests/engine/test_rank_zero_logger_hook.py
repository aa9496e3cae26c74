"""RankZeroLoggerHook: the test metrics JSON is written by the main process only (mmengine's
LoggerHook writes it on every rank, into one file)."""
import json
import logging
from types import SimpleNamespace

import pytest
from mmengine.hooks import LoggerHook

import hgkd_mm.engine.hooks as hooks
from hgkd_mm.engine import RankZeroLoggerHook


def fake_runner(log_dir):
    processor = SimpleNamespace(
        get_log_after_epoch=lambda runner, n, mode, with_non_scalar: (dict(acc=0.5), 'acc: 0.5'))
    return SimpleNamespace(log_processor=processor, test_dataloader=[0, 1],
                           logger=logging.getLogger('rank_zero_hook_test'), log_dir=str(log_dir))


@pytest.mark.parametrize('hook_class, main, written', [
    (RankZeroLoggerHook, True, True),
    (RankZeroLoggerHook, False, False),
    (LoggerHook, False, True),  # why: mmengine's hook writes on the other ranks too
])
def test_metrics_json_written_by_the_main_process_only(tmp_path, monkeypatch, hook_class,
                                                        main, written):
    monkeypatch.setattr(hooks, 'is_main_process', lambda: main)
    hook = hook_class()
    hook.json_log_path = '20261127_000000.json'  # set by before_run from the timestamp
    hook.after_test_epoch(fake_runner(tmp_path))
    path = tmp_path / hook.json_log_path
    assert path.exists() is written
    if written:
        assert json.loads(path.read_text()) == dict(acc=0.5)
