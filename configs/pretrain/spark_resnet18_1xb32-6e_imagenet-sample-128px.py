# SparK baseline for the demo-scale H-GKD student: mmpretrain's own SparK (SparseResNet
# encoder, SparKLightDecoder, pixel loss) pre-trains the same ResNet-18 on the same 900
# images, image size, mask ratio, batch, optimizer and schedule as
# hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py; only the target differs
# (normalised pixels instead of teacher tokens). One process: SparseBatchNorm2d (the
# SyncBN variant needs a process group). tools/analysis_tools/compare_pretraining.py
# derives its runs from this file.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = '../shared/data/imagenet-sample/'
train_ann_file = '{{ fileDirname }}/../../work_dirs/demo/train.txt'  # written by tools/demo.py
img_size = 128

data_preprocessor = dict(
    type='SelfSupDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
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

# ResNet-18 widths: the densify norms start at the 512-channel last stage
# (enc_dec_norm_dim) and halve per stage; the decoder starts at feature_dim (SparK's
# default width 512) and halves per upsampling to full resolution.
model = dict(
    type='SparK',
    input_size=img_size,
    downsample_raito=32,
    mask_ratio=0.6,
    enc_dec_norm_cfg=dict(type='SparseBatchNorm2d'),
    enc_dec_norm_dim=512,
    backbone=dict(type='SparseResNet', depth=18, out_indices=(0, 1, 2, 3),
                  norm_cfg=dict(type='SparseBatchNorm2d')),
    neck=dict(type='SparKLightDecoder', feature_dim=512, upsample_ratio=32, mid_channels=0,
              last_act=False, norm_cfg=dict(type='BN')),
    head=dict(type='SparKPretrainHead', loss=dict(type='PixelReconstructionLoss',
                                                  criterion='L2')))

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
    checkpoint=dict(type='CheckpointHook', interval=3, max_keep_ckpts=1))
custom_hooks = [dict(type='RNGStateHook')]
randomness = dict(seed=0)
