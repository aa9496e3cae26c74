"""tools/train.py whose checkpoint writes take about a second and print ``SAVING <path>``
when they start, so that a test can kill the process in the middle of a write.

The write still goes through hgkd_mm's ``atomic_write``; only its data arrive slowly.
"""
import runpy
import sys
import time
from pathlib import Path

from hgkd_mm.engine.checkpoint import AtomicLocalBackend
from hgkd_mm.utils.checkpoint_io import atomic_write

CHUNKS = 20


def slow_put(self, obj: bytes, filepath) -> None:
    with atomic_write(str(filepath)) as file:
        print(f'SAVING {filepath}', flush=True)
        step = len(obj) // CHUNKS + 1
        for start in range(0, len(obj), step):
            file.write(obj[start:start + step])
            file.flush()
            time.sleep(1 / CHUNKS)


AtomicLocalBackend.put = slow_put
sys.argv = [str(Path(__file__).resolve().parents[2] / 'tools/train.py')] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
