"""H-GKD through tools/train.py: the teacher loads from its checkpoint, the student's
checkpoints hold no teacher weights, and resuming continues the run identically."""
import json
import re

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from mmpretrain.models.backbones import VisionTransformer

from hgkd_mm.utils import safe_load

from helpers import TINY_TEACHER, TINY_VIT, make_image_folder, run_tool, tiny_hgkd_cfg

CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
data_preprocessor = dict(type='SelfSupDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3,
                         to_rgb=True)
model = {model!r}
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root={data!r}, with_label=False, pipeline=[
        dict(type='LoadImageOrRaise'), dict(type='RandomResizedCrop', scale=64),
        dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2)
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=1.0))
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=1))
custom_hooks = [dict(type='RNGStateHook'), dict(type='DeferredGradNormHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
randomness = dict(seed=0)
"""


def train(*args):
    result = run_tool(['tools/train.py', *args], threads=2, check=True)
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('hgkd_run')
    make_image_folder(tmp / 'images', classes=('x', ), size=80)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        vit = VisionTransformer(TINY_VIT, img_size=64, patch_size=16, out_type='featmap')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}},
               tmp / 'teacher.pth')
    config = tmp / 'hgkd_tiny.py'
    teacher = dict(TINY_TEACHER, checkpoint=str(tmp / 'teacher.pth'))
    config.write_text(CONFIG.format(model=tiny_hgkd_cfg(channels=32, teacher=teacher),
                                    data=str(tmp / 'images')))
    log = train(config, '--work-dir', tmp / 'full')
    # DeferredGradNormHook: every logged iteration (interval 1, 2 per epoch) has its norm
    assert len(re.findall(r'Epoch\(train\) +\[\d\]\[\d/2\].*grad_norm: \d', log)) == 4, log
    return tmp, config


def test_checkpoints_hold_the_student_not_the_teacher(setup):
    tmp, _ = setup
    state = safe_load(tmp / 'full' / 'epoch_2.pth')['state_dict']
    assert any(k.startswith('backbone.layer4.') for k in state)
    assert any(k.startswith('neck.mask_tokens.') for k in state)
    assert not any(k.startswith('target_generator.') for k in state)


def test_resume_continues_identically(setup):
    tmp, config = setup
    log = train(config, '--work-dir', tmp / 'resumed', '--resume', tmp / 'full' / 'epoch_1.pth')
    assert 'resumed epoch: 1' in log
    expected = safe_load(tmp / 'full' / 'epoch_2.pth')['state_dict']
    resumed = safe_load(tmp / 'resumed' / 'epoch_2.pth')['state_dict']
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)  # bitwise


EVAL_CONFIG = """
_base_ = 'hgkd_tiny.py'
heldout_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root={data!r}, with_label=False, pipeline=[
        dict(type='LoadImageOrRaise'), dict(type='Resize', scale=64), dict(type='PackInputs')]))
model = dict(teacher=dict(input_mode={mode!r}, checkpoint={teacher!r}, decoder_num_heads=4))
"""


def mae_teacher_file(tmp) -> str:
    """The tiny teacher with an MAE decoder of its width, which ``input_mode='masked'``
    needs (``neck.`` keys, as in mmpretrain's MAE checkpoints)."""
    from mmpretrain.models.necks import MAEPretrainDecoder
    state_dict = safe_load(tmp / 'teacher.pth')['state_dict']
    torch.manual_seed(1)
    decoder = MAEPretrainDecoder(num_patches=16, embed_dim=64, decoder_embed_dim=64,
                                 decoder_depth=1, decoder_num_heads=4, mlp_ratio=2)
    state_dict.update({f'neck.{k}': v for k, v in decoder.state_dict().items()})
    torch.save({'state_dict': state_dict}, tmp / 'teacher_mae.pth')
    return str(tmp / 'teacher_mae.pth')


def eval_feature_loss(*args):
    return run_tool(['tools/analysis_tools/eval_feature_loss.py', *args], threads=2)


@pytest.mark.parametrize('mode', ['full', 'masked'])
def test_heldout_feature_loss_for_both_teacher_input_modes(setup, mode):
    tmp, _ = setup
    config = tmp / f'eval_{mode}.py'
    teacher = mae_teacher_file(tmp) if mode == 'masked' else str(tmp / 'teacher.pth')
    config.write_text(EVAL_CONFIG.format(data=str(tmp / 'images'), mode=mode, teacher=teacher))
    out = tmp / f'eval_{mode}.json'
    result = eval_feature_loss(config, tmp / 'full' / 'epoch_2.pth', '--out', out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = json.loads(out.read_text())['heldout_loss']
    assert set(losses) == {'trained student', 'untrained student', 'mean token'}
    assert all(np.isfinite(value) and value > 0 for value in losses.values()), losses


def test_heldout_feature_loss_needs_a_heldout_dataloader(setup):
    tmp, config = setup
    result = eval_feature_loss(config, tmp / 'full' / 'epoch_2.pth')
    assert result.returncode != 0
    assert 'has no `heldout_dataloader`' in result.stderr and 'Traceback' not in result.stderr
