"""tools/model_converters/hgkd_to_dense.py for every student: the converted file loads
strictly into mmpretrain's backbone and, where they have the model, torchvision's and timm's
(convnext_tiny, convnextv2_tiny, mobilenet_v2 / mobilenetv2_100, resnext50_32x4d), and gives
the student's features (no mask, float64) in a fresh process that never imports hgkd_mm."""
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import hgkd_mm  # noqa: F401 (registers the students)

from helpers import TINY_TEACHER, load_tool

hgkd_to_dense = load_tool('model_converters/hgkd_to_dense.py')

# student config, its dense mmpretrain backbone (in the fresh process), library formats
STUDENTS = {
    'convnext': (dict(type='HGKDSparseConvNeXt', arch='tiny'),
                 "ConvNeXt('tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False)",
                 ('timm', 'torchvision')),
    'convnext-v2': (dict(type='HGKDSparseConvNeXt', arch='tiny', use_grn=True,
                         layer_scale_init_value=0.),
                    "ConvNeXt('tiny', out_indices=(0, 1, 2, 3), gap_before_final_norm=False, "
                    'use_grn=True, layer_scale_init_value=0.)', ('timm', )),
    'mobilenet-v2': (dict(type='HGKDSparseMobileNetV2'),
                     'MobileNetV2(out_indices=(1, 2, 4, 7))', ('timm', 'torchvision')),
    'resnetv1c50': (dict(type='HGKDSparseResNetV1c', depth=50),
                    'ResNetV1c(depth=50, out_indices=(0, 1, 2, 3))', ()),
    'resnetv1d50': (dict(type='HGKDSparseResNetV1d', depth=50),
                    'ResNetV1d(depth=50, out_indices=(0, 1, 2, 3))', ()),
    'resnext50': (dict(type='HGKDSparseResNeXt', depth=50, groups=32, width_per_group=4),
                  'ResNeXt(50, groups=32, width_per_group=4, out_indices=(0, 1, 2, 3))',
                  ('timm', 'torchvision')),
}

# Run in a fresh interpreter: load each converted file into its library's model (strictly)
# and save the features of the saved images. argv: work folder, mmpretrain model, formats.
FRESH = r'''
import sys
import torch
folder, mmpretrain_model, formats = sys.argv[1], sys.argv[2], sys.argv[3:]
images = torch.load(f'{folder}/images.pth')
features = {}

from mmpretrain.models.backbones import ConvNeXt, MobileNetV2, ResNetV1c, ResNetV1d, ResNeXt
model = eval(mmpretrain_model)
state = torch.load(f'{folder}/mmpretrain.pth', weights_only=True)['state_dict']
model.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()}, strict=True)
model.eval()
with torch.no_grad():
    features['mmpretrain'] = list(model.double()(images))

def resnet_stages(model, x):
    x = model.maxpool(model.act1(model.bn1(model.conv1(x)))) if hasattr(model, 'act1') \
        else model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        outs.append(x)
    return outs

def run(fmt, arch):
    import timm, torchvision
    state = torch.load(f'{folder}/{fmt}.pth', weights_only=True)
    if fmt == 'timm':
        name = {'convnext': 'convnext_tiny', 'convnext-v2': 'convnextv2_tiny',
                'mobilenet-v2': 'mobilenetv2_100', 'resnext50': 'resnext50_32x4d'}[arch]
        model = timm.create_model(name, pretrained=False, num_classes=0)
    else:
        name = {'convnext': 'convnext_tiny', 'mobilenet-v2': 'mobilenet_v2',
                'resnext50': 'resnext50_32x4d'}[arch]
        model = getattr(torchvision.models, name)()
        if hasattr(model, 'classifier'):  # the classifier layer, not converted
            model.classifier[-1] = torch.nn.Identity()
        else:
            model.fc = torch.nn.Identity()
    model.load_state_dict(state, strict=True)
    model = model.eval().double()
    x = images
    if arch.startswith('resnext'):
        return resnet_stages(model, x)
    if arch.startswith('convnext') and fmt == 'timm':
        outs = model.forward_intermediates(x, indices=4, intermediates_only=True)
        return outs[:3] + [model.head.norm(outs[3])]  # the final norm, per position
    if arch.startswith('convnext'):
        outs = []
        for i, stage in enumerate(model.features):
            x = stage(x)
            if i % 2:
                outs.append(x)
        return outs[:3] + [model.classifier[0](outs[3])]
    if fmt == 'timm':  # mobilenetv2_100
        x = model.bn1(model.conv_stem(x))
        outs = []
        for i, block in enumerate(model.blocks):
            x = block(x)
            if i in (1, 2, 4):
                outs.append(x)
        return outs + [model.bn2(model.conv_head(x))]
    outs = []
    for i, block in enumerate(model.features):  # torchvision mobilenet_v2
        x = block(x)
        if i in (3, 6, 13, 18):
            outs.append(x)
    return outs

arch = folder.rsplit('/', 1)[1]
with torch.no_grad():
    for fmt in formats:
        features[fmt] = run(fmt, arch)
assert 'hgkd_mm' not in sys.modules
torch.save(features, f'{folder}/features.pth')
'''


def hgkd_checkpoint(student: dict, path) -> torch.nn.Module:
    """An H-GKD model with ``student`` (weights and BatchNorm statistics moved off their
    init) saved to ``path``; its student backbone in float64, eval mode."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(type='HGKD', backbone=student, teacher=TINY_TEACHER,
                                  neck=dict(type='HGKDUNetDecoder', channels=32),
                                  head=dict(type='HGKDDistillHead')))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.backbone.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=g)
                tensor.add_(0.1 * noise if 'running_var' in name else 0.05 * (noise - 0.5))
    torch.save({'state_dict': model.state_dict(), 'meta': {'epoch': 1}}, path)
    backbone = model.backbone.double()
    backbone.eval()
    return backbone


def without_stage_norms(backbone, names=('norm0', 'norm1', 'norm2')):
    """ConvNeXt's per-stage output norms: timm and torchvision have the last only."""
    for name in names:
        setattr(backbone, name, torch.nn.Identity())
    return backbone


@pytest.mark.parametrize('arch', STUDENTS)
def test_converted_student_equals_the_library_models(arch, tmp_path):
    student_cfg, mmpretrain_model, formats = STUDENTS[arch]
    folder = tmp_path / arch
    folder.mkdir()
    student = hgkd_checkpoint(student_cfg, tmp_path / 'hgkd.pth')
    for fmt in ('mmpretrain', ) + formats:
        state, found = hgkd_to_dense.convert_student(str(tmp_path / 'hgkd.pth'),
                                                     str(folder / f'{fmt}.pth'), fmt)
        assert found == arch
    images = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    torch.save(images, folder / 'images.pth')
    with torch.no_grad():
        expected = list(student(images))
    result = subprocess.run([sys.executable, '-c', FRESH, str(folder), mmpretrain_model,
                             *formats], capture_output=True, text=True, timeout=900,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    features = torch.load(folder / 'features.pth')
    for fmt, got in features.items():
        reference = expected
        if arch.startswith('convnext') and fmt != 'mmpretrain':
            with torch.no_grad():
                reference = list(without_stage_norms(student)(images))
        assert len(got) == 4, fmt
        for g, e in zip(got, reference):
            torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9, msg=fmt)


@pytest.mark.parametrize('fmt', ['timm', 'torchvision'])
def test_formats_without_the_model_are_refused_by_name(fmt, tmp_path):
    hgkd_checkpoint(STUDENTS['resnetv1d50'][0], tmp_path / 'hgkd.pth')
    with pytest.raises(hgkd_to_dense.ConversionError,
                       match=f'{fmt} has no resnetv1d50 model; use --format mmpretrain'):
        hgkd_to_dense.convert(str(tmp_path / 'hgkd.pth'), str(tmp_path / 'out.pth'), fmt)
    assert not (tmp_path / 'out.pth').exists()
