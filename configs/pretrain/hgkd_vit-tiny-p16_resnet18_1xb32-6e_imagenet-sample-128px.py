# Demo stage 2: H-GKD distils the demo MAE teacher (stage 1) into a sparse ResNet-18,
# on the same 900 training images, on the CPU.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = '../shared/data/imagenet-sample/'
train_ann_file = '{{ fileDirname }}/../../work_dirs/demo/train.txt'  # written by tools/demo.py
heldout_ann_file = '{{ fileDirname }}/../../work_dirs/demo/heldout.txt'
teacher_checkpoint = '{{ fileDirname }}/../../work_dirs/demo/mae/epoch_15.pth'
img_size = 128

data_preprocessor = dict(
    type='SelfSupDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.67, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file=train_ann_file,
                 with_label=False, pipeline=train_pipeline))
# held-out images for tools/analysis_tools/eval_feature_loss.py (deterministic view)
heldout_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
heldout_dataloader = dict(
    batch_size=32, num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root=data_root, ann_file=heldout_ann_file,
                 with_label=False, pipeline=heldout_pipeline))

model = dict(
    type='HGKD',
    mask_ratio=0.6,
    backbone=dict(type='HGKDSparseResNet', depth=18, backend='masked', out_indices=(0, 1, 2, 3),
                  norm_cfg=dict(type='MaskedBatchNorm2d')),
    neck=dict(type='HGKDUNetDecoder', in_channels=(64, 128, 256, 512), in_strides=(4, 8, 16, 32),
              channels=256, norm_cfg=dict(type='BN')),
    head=dict(type='HGKDDistillHead', target_norm='layernorm', loss='mse', loss_on='masked'),
    teacher=dict(
        type='FrozenViTTeacher',
        arch=dict(embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768),
        img_size=img_size, patch_size=16, out_layers=(-1, ), input_mode='full',
        checkpoint=teacher_checkpoint))

max_epochs = 6
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.95), weight_decay=0.04, fused=True),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'mask_tokens': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type="CheckpointHook", interval=3, max_keep_ckpts=1))
custom_hooks = [dict(type='RNGStateHook')]
randomness = dict(seed=0)
