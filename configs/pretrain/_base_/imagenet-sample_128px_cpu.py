# Data and runtime of the offline CPU demo: the 900 training images of
# ../shared/data/imagenet-sample (tools/demo.py holds out 100 and writes the split files),
# unlabeled, 128 px. Shared by the demo's MAE, H-GKD and SparK configs.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = '../shared/data/imagenet-sample/'
train_ann_file = '{{ fileDirname }}/../../../work_dirs/demo/train.txt'
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

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=3, max_keep_ckpts=1))
custom_hooks = [dict(type='RNGStateHook'), dict(type='DeferredGradNormHook')]
randomness = dict(seed=0)
# multi-process runs (tools/dist_train.sh): a rank that stops answering fails the
# collectives after 5 minutes instead of blocking the job
env_cfg = dict(dist_cfg=dict(timeout=300))
