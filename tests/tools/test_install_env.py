"""tools/install_env.sh leaves a folder that is not a venv alone (``venv --clear`` would
empty it) and says which setting to change."""
import os
import subprocess

from helpers import ROOT


def test_a_folder_that_is_not_a_venv_is_left_alone(tmp_path):
    folder = tmp_path / 'not_a_venv'
    (folder / 'data').mkdir(parents=True)
    (folder / 'data' / 'notes.txt').write_text('keep me')
    (folder / 'ckpt.pth').write_bytes(b'weights')
    result = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'install_env.sh')],
                            env=dict(os.environ, HGKD_VENV=str(folder)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f'{folder} exists and is not a Python venv' in result.stderr
    assert 'HGKD_VENV' in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ['ckpt.pth', 'data']
    assert (folder / 'data' / 'notes.txt').read_text() == 'keep me'
