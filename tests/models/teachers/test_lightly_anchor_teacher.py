"""dev/lightly_train_anchor.py hands the teacher to lightly-train as a timm ViT: the exported
file holds the teacher's own weights, and the features lightly-train takes from it are
FrozenViTTeacher's (timm_reference.py makes the checkpoints)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from timm_reference import DEPTH, EMBED, HEADS, IMG, PATCH, TOL, build_teacher

_SCRIPT = Path(__file__).resolve().parents[3] / 'dev' / 'lightly_train_anchor.py'
_spec = importlib.util.spec_from_file_location('lightly_train_anchor', _SCRIPT)
anchor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(anchor)


def _lightly_local_features(vit, images):
    """What lightly-train 0.18's TIMMModelWrapper.forward_features computes for a timm ViT
    (lightly_train/_models/timm/timm.py, _forward_intermediates): the last block's patch
    tokens after the final norm, as a (B, D, Ht, Wt) grid."""
    return vit.forward_intermediates(images, indices=1, output_fmt='NCHW',
                                     intermediates_only=True, norm=True)[0]


@pytest.mark.parametrize('fmt', ['zoo', 'mae', 'timm'])
def test_exported_teacher_is_the_frozen_teacher(files, timm_vit, images, tmp_path, fmt):
    out = str(tmp_path / 'teacher.pth')
    anchor.export_teacher(files[fmt], out, num_heads=HEADS)
    vit = anchor.load_exported_teacher(out)
    assert torch.load(out, weights_only=True)['timm_vit_kwargs'] == dict(
        img_size=IMG, patch_size=PATCH, embed_dim=EMBED, depth=DEPTH, num_heads=HEADS,
        mlp_ratio=4.0, qkv_bias=True, init_values=None)
    reference = {k: v for k, v in timm_vit.state_dict().items() if not k.startswith('head.')}
    exported = vit.state_dict()
    assert exported.keys() == reference.keys()
    assert all(torch.equal(exported[k], reference[k]) for k in reference)

    with torch.no_grad():
        torch.testing.assert_close(_lightly_local_features(vit, images),
                                   build_teacher(files[fmt])(images)[0], **TOL)


def test_exported_teacher_at_another_size(files, tmp_path):
    """pos_embed resized as FrozenViTTeacher resizes it for a larger input."""
    out = str(tmp_path / 'teacher.pth')
    anchor.export_teacher(files['zoo'], out, num_heads=HEADS, img_size=2 * IMG)
    vit = anchor.load_exported_teacher(out)
    larger = torch.randn(2, 3, 2 * IMG, 2 * IMG, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(_lightly_local_features(vit, larger),
                                   build_teacher(files['zoo'])(larger)[0], **TOL)
    with pytest.raises(ValueError, match='--img-size 72 is not a multiple'):
        anchor.export_teacher(files['zoo'], out, num_heads=HEADS, img_size=72)


def test_export_checks_the_head_count(files, tmp_path):
    with pytest.raises(ValueError, match='--num-heads 5 does not divide the width 64'):
        anchor.export_teacher(files['zoo'], str(tmp_path / 'teacher.pth'), num_heads=5)


def test_read_ann_file(tmp_path):
    root = tmp_path / 'data'
    (root / 'a').mkdir(parents=True)
    for name in ('x.jpg', 'y z.jpg'):
        (root / 'a' / name).write_bytes(b'')
    ann = tmp_path / 'pool.txt'
    ann.write_text('a/x.jpg\n\na/y z.jpg 3\n')
    assert anchor.read_ann_file(str(ann), str(root)) == [
        str(root / 'a' / 'x.jpg'), str(root / 'a' / 'y z.jpg')]

    ann.write_text('a/x.jpg\na/missing.jpg\n')
    with pytest.raises(FileNotFoundError, match=r'1 images not found .*line 2: .*missing\.jpg'):
        anchor.read_ann_file(str(ann), str(root))
    with pytest.raises(FileNotFoundError, match='--data-root'):
        anchor.read_ann_file(str(ann), str(tmp_path / 'nowhere'))


def test_train_options_are_checked():
    base = ['train', '--teacher', 'random', '--ann-file', 'a.txt', '--data-root', '.',
            '--work-dir', 'w', '--student-out', 's.pth', '--steps', '10']
    assert anchor.parse_args(base).batch_size == 32
    for bad in (['--steps', '0'], ['--img-size', '100'], ['--lr', '-1']):
        with pytest.raises(SystemExit):
            anchor.parse_args(base + bad)
