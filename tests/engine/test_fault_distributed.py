"""A 2-process gloo run (tools/dist_train.sh) whose rank 1 is killed, or raises, ends the
whole job in bounded time with that rank's failure in the output: no hang."""
import os
import time

import pytest
from fault_setup import ENGINE_TESTS, ROOT, image_folder, write_config
from helpers import run_tool

BOUND_S = 60  # the config's process-group timeout; the job must end well inside it


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp('dist') / 'images')


def dist_train(config, work_dir):
    start = time.monotonic()
    # the fault hook module (tests/engine/fault_hooks.py) must import in every rank
    result = run_tool(['tools/dist_train.sh', config, 2, '--work-dir', work_dir], timeout=300,
                      env={'PYTHONPATH': f'{ROOT}{os.pathsep}{ENGINE_TESTS}'})
    return result, time.monotonic() - start


def test_a_killed_rank_ends_the_job(images, tmp_path):
    config = write_config(tmp_path / 'kill.py', images, dist_timeout=BOUND_S, extra_hooks=[
        dict(type='RankFaultHook', rank=1, iteration=3, fault='kill')])
    result, seconds = dist_train(config, tmp_path / 'work')
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'KILLING rank 1' in output and 'Signal 9 (SIGKILL)' in output, output[-3000:]
    killed_at = float(output.split('KILLING rank 1 at ')[1].split()[0])
    assert time.time() - killed_at < BOUND_S, output[-3000:]
    assert seconds < 200


def test_a_raising_rank_ends_the_job_with_its_message(images, tmp_path):
    config = write_config(tmp_path / 'raise.py', images, dist_timeout=BOUND_S, extra_hooks=[
        dict(type='RankFaultHook', rank=1, iteration=3, fault='raise')])
    result, seconds = dist_train(config, tmp_path / 'work')
    assert result.returncode != 0
    summary = result.stderr.split('Root Cause')[-1]  # torchrun's report of the failed rank
    assert 'RuntimeError: injected failure on rank 1' in summary, result.stderr[-3000:]
    assert 'rank      : 1' in summary
