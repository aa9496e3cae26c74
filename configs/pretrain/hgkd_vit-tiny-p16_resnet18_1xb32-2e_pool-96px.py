# The demo's H-GKD run: the shipped MAE teacher (checkpoints/mae_vit-tiny-p16_pool-96px.pth,
# made by mae_vit-tiny-p16_1xb64-40e_pool-96px.py) distils into a sparse ResNet-18 at 96 px
# on the unlabeled pool of configs/splits/pool.txt (imagenet-sample + the train part of the
# fixed caltech101 split), on the CPU: 280 steps of 32. The loss positions (the visible
# ones) and the schedule (2 epochs) were chosen on the split's val part (docs/results.md).
_base_ = ['./hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py']

data_root = '../shared/data/'
img_size = 96
max_epochs = 2
teacher_checkpoint = '{{ fileDirname }}/../../checkpoints/mae_vit-tiny-p16_pool-96px.pth'

# restated: mmengine fixes the base's pipeline with the base's img_size (128) when it reads it
train_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.67, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='{{ fileDirname }}/../splits/pool.txt',
                 pipeline=train_pipeline))

# held-out images for eval_feature_loss.py: the val part of the caltech101 split
heldout_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
heldout_dataloader = dict(
    dataset=dict(data_root=data_root, with_label=True,
                 ann_file='{{ fileDirname }}/../splits/caltech101_val.txt',
                 pipeline=heldout_pipeline))

model = dict(teacher=dict(img_size=img_size, checkpoint=teacher_checkpoint))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 1, by_epoch=True, begin=1,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))
