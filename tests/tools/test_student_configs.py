"""The paper-scale configs of the other students and teachers build as named: student
class and widths, decoder inputs, teacher arch and patch, and the teacher file taken from
--cfg-options model.teacher.checkpoint=PATH."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import hgkd_mm  # noqa: F401

from helpers import ROOT

PRETRAIN = ROOT / 'configs' / 'pretrain'
# config: (student class, stage widths, teacher patch, teacher width)
CONFIGS = {
    'hgkd_dinov2-small-p14_resnet50_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseResNet', (256, 512, 1024, 2048), 14, 384),
    'hgkd_vit-base-p16_convnext-tiny_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseConvNeXt', (96, 192, 384, 768), 16, 768),
    'hgkd_vit-base-p16_convnext-v2-tiny_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseConvNeXt', (96, 192, 384, 768), 16, 768),
    'hgkd_vit-base-p16_mobilenet-v2_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseMobileNetV2', (24, 32, 96, 1280), 16, 768),
    'hgkd_vit-base-p16_resnetv1c50_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseResNetV1c', (256, 512, 1024, 2048), 16, 768),
    'hgkd_vit-base-p16_resnetv1d50_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseResNetV1d', (256, 512, 1024, 2048), 16, 768),
    'hgkd_vit-base-p16_resnext50-32x4d_8xb512-amp-coslr-800e_in1k.py':
        ('HGKDSparseResNeXt', (256, 512, 1024, 2048), 16, 768),
}


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds_its_student_and_teacher(name):
    student, widths, patch, width = CONFIGS[name]
    cfg = Config.fromfile(PRETRAIN / name)
    assert cfg.model.teacher.checkpoint.startswith('https://')  # replaced below, as users do
    cfg.merge_from_dict({'model.teacher.checkpoint': None})
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == student
    assert tuple(model.neck.in_strides) == (4, 8, 16, 32)
    assert [norm.num_features for norm in model.neck.densify_norms] == [
        widths[i] for i in model.neck.used]
    if hasattr(model.backbone, 'out_channels'):
        assert model.backbone.out_channels == widths
    assert (model.teacher.patch_size, model.teacher.embed_dims) == (patch, width)
    assert model.neck.out_stride == patch
    if 'convnext-v2' in name:
        assert model.backbone.stages[0][0].grn is not None
