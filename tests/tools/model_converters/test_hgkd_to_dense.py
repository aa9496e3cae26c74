"""tools/model_converters/hgkd_to_dense.py: the dense ResNet equals the sparse student with
an all-visible mask, in mmpretrain, torchvision and timm; bad input is refused, OUT is
never partial."""
import os
import stat
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from mmengine.runner.checkpoint import save_checkpoint
from torchvision.models.feature_extraction import create_feature_extractor

from helpers import CONVERTER, build_hgkd, load_tool, run_tool

hgkd_to_dense = load_tool('model_converters/hgkd_to_dense.py')

LAYERS = ('layer1', 'layer2', 'layer3', 'layer4')
FC_KEYS = {'fc.weight', 'fc.bias'}


@pytest.fixture(scope='module', params=[18, 50])
def student(request):
    """``(depth, H-GKD checkpoint, stage features of its sparse student, mask=None)``."""
    checkpoint = request.getfixturevalue(f'hgkd_r{request.param}')
    with torch.no_grad():
        features = sparse_student(checkpoint)(images(), mask=None)
    return request.param, checkpoint, features


def sparse_student(checkpoint) -> torch.nn.Module:
    """The H-GKD model of ``checkpoint``'s student encoder, in eval mode, float64."""
    state_dict = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    depth = hgkd_to_dense.resnet_depth(
        {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')})
    model = build_hgkd(depth)
    model.load_state_dict(state_dict)
    model.backbone.eval()
    return model.backbone.double()


def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 128, dtype=torch.float64)


def assert_same_features(reference, features) -> None:
    assert len(reference) == len(features) == 4
    for expected, actual in zip(reference, features):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_mmpretrain_resnet_matches_sparse_student(student, tmp_path):
    from mmpretrain.models.backbones import ResNet
    depth, checkpoint, reference = student
    out = tmp_path / 'dense.pth'
    hgkd_to_dense.convert(str(checkpoint), str(out))
    dense = torch.load(out, weights_only=True)  # plain types only, safe loader
    assert dense['meta']['depth'] == depth and dense['meta']['format'] == 'mmpretrain'
    assert all(k.startswith('backbone.') for k in dense['state_dict'])

    resnet = ResNet(depth, out_indices=(0, 1, 2, 3),
                    init_cfg=dict(type='Pretrained', checkpoint=str(out), prefix='backbone.'))
    state_dict = {k[len('backbone.'):]: v for k, v in dense['state_dict'].items()}
    assert set(state_dict) == set(resnet.state_dict())  # zero missing, zero unexpected
    resnet.init_weights()
    resnet.eval()  # mmpretrain's ResNet.train() returns None: no chaining
    resnet.double()
    with torch.no_grad():
        assert_same_features(reference, resnet(images()))


def test_all_visible_mask_is_no_mask(student):
    _, checkpoint, reference = student
    with torch.no_grad():
        all_visible = torch.ones(2, 3, 4, dtype=torch.bool)
        assert_same_features(reference, sparse_student(checkpoint)(images(), all_visible))


def test_torchvision_resnet_matches_sparse_student(student, tmp_path):
    depth, checkpoint, reference = student
    out = tmp_path / 'torchvision.pth'
    hgkd_to_dense.convert(str(checkpoint), str(out), 'torchvision')
    state_dict = torch.load(out, weights_only=True)
    model = getattr(torchvision.models, f'resnet{depth}')()
    assert set(model.state_dict()) - set(state_dict) == FC_KEYS
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    assert set(missing) == FC_KEYS and not unexpected
    extractor = create_feature_extractor(model.eval().double(), {n: n for n in LAYERS})
    with torch.no_grad():
        features = extractor(images())
        assert_same_features(reference, [features[n] for n in LAYERS])


def test_timm_resnet_matches_sparse_student(student, tmp_path):
    depth, checkpoint, reference = student
    out = tmp_path / 'timm.pth'
    hgkd_to_dense.convert(str(checkpoint), str(out), 'timm')
    state_dict = torch.load(out, weights_only=True)
    classifier = timm.create_model(f'resnet{depth}', pretrained=False)
    assert set(classifier.state_dict()) - set(state_dict) == FC_KEYS
    assert not set(state_dict) - set(classifier.state_dict())
    model = timm.create_model(f'resnet{depth}', pretrained=False, features_only=True,
                              out_indices=(1, 2, 3, 4))
    model.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        assert_same_features(reference, model.eval().double()(images()))


def test_command_line(hgkd_r18, tmp_path):
    out = tmp_path / 'sub' / 'r18.pth'
    result = run_tool([CONVERTER, hgkd_r18, out], timeout=900)
    assert result.returncode == 0, result.stderr
    assert 'mmpretrain ResNet keys' in result.stdout
    assert torch.load(out, weights_only=True)['meta']['arch'] == 'resnet18'
    assert os.listdir(out.parent) == ['r18.pth']  # no temporary file left


def test_refuses_missing_file(tmp_path):
    missing = tmp_path / 'nope.pth'
    result = run_tool([CONVERTER, missing, tmp_path / 'out.pth'], timeout=900)
    assert result.returncode != 0
    assert str(missing) in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_refuses_classifier_checkpoint(tmp_path):
    from mmpretrain.models import build_classifier
    classifier = build_classifier(dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=512)))
    path = tmp_path / 'classifier.pth'
    save_checkpoint({'meta': {}, 'state_dict': classifier.state_dict()}, str(path))
    with pytest.raises(hgkd_to_dense.ConversionError, match=f'{path} is not an H-GKD'):
        hgkd_to_dense.convert(str(path), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


def test_refuses_plain_tensor_dict(tmp_path):
    path = tmp_path / 'plain.pth'
    torch.save({'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(2, 2)}, path)
    with pytest.raises(hgkd_to_dense.ConversionError, match=f'{path} is not an H-GKD'):
        hgkd_to_dense.convert(str(path), str(tmp_path / 'out.pth'))


@pytest.mark.parametrize('keep', [0.5, 0.0])
def test_refuses_truncated_file(hgkd_r18, tmp_path, keep):
    data = hgkd_r18.read_bytes()
    path = tmp_path / 'truncated.pth'
    path.write_bytes(data[:int(len(data) * keep)])
    out = tmp_path / 'out.pth'
    out.write_bytes(b'previous')
    with pytest.raises(hgkd_to_dense.ConversionError, match=f'cannot read checkpoint {path}'):
        hgkd_to_dense.convert(str(path), str(out))
    assert out.read_bytes() == b'previous'


@pytest.mark.parametrize('link', [None, 'symlink', 'hardlink'])
def test_refuses_to_write_over_its_input(hgkd_r18, tmp_path, link):
    path = tmp_path / 'hgkd.pth'
    path.write_bytes(hgkd_r18.read_bytes())
    out = path
    if link:
        out = tmp_path / 'out.pth'
        (os.symlink if link == 'symlink' else os.link)(path, out)
    result = run_tool([CONVERTER, path, out], timeout=900)
    assert result.returncode == 1
    assert f'OUT {out} is IN {path}' in result.stderr
    assert path.read_bytes() == hgkd_r18.read_bytes()


def test_refuses_a_folder_as_output(hgkd_r18, tmp_path):
    for out in (str(tmp_path), str(tmp_path / 'new') + os.sep):
        with pytest.raises(hgkd_to_dense.ConversionError, match=f'OUT {out} is a folder'):
            hgkd_to_dense.convert(str(hgkd_r18), out)
    assert os.listdir(tmp_path) == []
    blocker = tmp_path / 'file'
    blocker.write_bytes(b'x')
    with pytest.raises(hgkd_to_dense.ConversionError, match='cannot create the folder of OUT'):
        hgkd_to_dense.convert(str(hgkd_r18), str(blocker / 'out.pth'))


def test_failed_write_leaves_no_partial_output(hgkd_r18, tmp_path, monkeypatch):
    def save_half(obj, file):
        file.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(hgkd_to_dense.torch, 'save', save_half)
    with pytest.raises(OSError, match='disk full'):
        hgkd_to_dense.convert(str(hgkd_r18), str(tmp_path / 'out.pth'))
    assert os.listdir(tmp_path) == []


def test_output_loads_safely_without_hgkd_mm(hgkd_r18, tmp_path):
    """mmdet/mmseg users load OUT with plain torch: no allow-list from this package."""
    outs = []
    for fmt in hgkd_to_dense.FORMATS:
        outs.append(tmp_path / f'{fmt}.pth')
        hgkd_to_dense.convert(str(hgkd_r18), str(outs[-1]), fmt)
    check = ('import sys, torch\n'
             'for path in sys.argv[1:]:\n'
             '    torch.load(path, map_location="cpu", weights_only=True)\n'
             'assert "hgkd_mm" not in sys.modules\n')
    result = subprocess.run([sys.executable, '-c', check, *map(str, outs)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(out.stat().st_mode) for out in outs} == {0o666 & ~umask}


NOT_CHECKPOINTS = {
    'notes.txt': b'hello world',
    'two_lines.txt': b'some notes\nline2',
    'settings.json': b'{"a": 1}',
    'random.bin': bytes(range(256)) * 3,
}


@pytest.mark.parametrize('name', sorted(NOT_CHECKPOINTS))
def test_refuses_file_that_is_not_a_checkpoint(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(NOT_CHECKPOINTS[name])
    with pytest.raises(hgkd_to_dense.ConversionError,
                       match=f'cannot read checkpoint {path}') as error:
        hgkd_to_dense.convert(str(path), str(tmp_path / 'out.pth'))
    assert 'weights_only' not in str(error.value)  # no advice to turn the safe loader off
    assert not (tmp_path / 'out.pth').exists()


def test_command_line_refuses_text_file(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_text('hello world')
    result = run_tool([CONVERTER, path, tmp_path / 'out.pth'], timeout=900)
    assert result.returncode == 1
    assert f'error: cannot read checkpoint {path}' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_refuses_non_finite_weights(hgkd_r18, tmp_path):
    """A diverged run's checkpoint is not converted (it would train downstream on NaN)."""
    checkpoint = torch.load(hgkd_r18, map_location='cpu', weights_only=True)
    checkpoint['state_dict']['backbone.layer1.0.conv1.weight'][0, 0, 0, 0] = float('nan')
    path = tmp_path / 'diverged.pth'
    torch.save(checkpoint, path)
    with pytest.raises(hgkd_to_dense.ConversionError,
                       match=f'{path}: NaN or Inf in 1 tensors .backbone.layer1.0.conv1.weight'):
        hgkd_to_dense.convert(str(path), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()


class RunsCode:
    """Pickles as ``os.system('...')``: a checkpoint that would run a command when loaded."""

    def __reduce__(self):
        return os.system, ('echo pwned',)


def test_refuses_a_pickle_that_would_run_code_by_name(tmp_path):
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {}, 'meta': RunsCode()}, path)
    with pytest.raises(hgkd_to_dense.ConversionError) as error:
        hgkd_to_dense.convert(str(path), str(tmp_path / 'out.pth'))
    message = str(error.value)
    assert message.startswith(f'cannot read checkpoint {path}: it asks for ')
    assert 'system, which could run code: refused by weights_only=True' in message
    assert 'truncated' not in message and 'weights_only=False' not in message
