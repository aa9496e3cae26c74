"""FrozenAwareOptimWrapperConstructor: mmengine's parameter groups, no warning per frozen
teacher parameter."""
import pytest
from mmengine.config import Config
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.optim.optimizer import default_constructor
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from helpers import ROOT

CONFIGS = ['hgkd_r50.py', 'hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py']


def groups(optim_wrapper):
    """Per group: parameter identities and every setting but the parameters."""
    return [({id(p) for p in group['params']}, {k: v for k, v in group.items() if k != 'params'})
            for group in optim_wrapper.optimizer.param_groups]


@pytest.mark.parametrize('name', CONFIGS)
def test_same_groups_as_mmengine_without_frozen_warnings(name, monkeypatch):
    cfg = Config.fromfile(ROOT / 'configs' / 'pretrain' / name)
    cfg.model.teacher.checkpoint = None
    if name == 'hgkd_r50.py':  # AmpOptimWrapper needs a GPU; the groups do not depend on it
        cfg.model.backbone.depth = 18
        cfg.model.neck.in_channels = (64, 128, 256, 512)
        cfg.model.teacher.arch = dict(embed_dims=192, num_layers=2, num_heads=3,
                                      feedforward_channels=384)
        cfg.model.head.target_dims = 192
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('dtype')
        cfg.optim_wrapper.pop('loss_scale')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
        wrapper_cfg = cfg.optim_wrapper.copy()
        assert wrapper_cfg.pop('constructor') == 'FrozenAwareOptimWrapperConstructor'
        paramwise_cfg = wrapper_cfg.pop('paramwise_cfg')
        messages = []
        monkeypatch.setattr(default_constructor, 'print_log',
                            lambda message, *args, **kwargs: messages.append(message))
        reference = DefaultOptimWrapperConstructor(wrapper_cfg, paramwise_cfg)(model)
        assert any(m.startswith('target_generator.') and 'requires_grad=False' in m for m in messages)
        messages.clear()
        ours = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type='FrozenAwareOptimWrapperConstructor', optim_wrapper_cfg=wrapper_cfg,
            paramwise_cfg=paramwise_cfg))(model)
    assert not any('requires_grad=False' in m for m in messages)
    assert groups(ours) == groups(reference)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set().union(*(ids for ids, _ in groups(ours))) == trainable
    assert not trainable & {id(p) for p in model.target_generator.parameters()}
