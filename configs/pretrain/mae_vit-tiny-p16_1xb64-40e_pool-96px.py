# The shipped demo teacher (checkpoints/mae_vit-tiny-p16_pool-96px.pth): mmpretrain's own
# MAE pretrains a small ViT (6 layers, width 192, patch 16) at 96 px for 40 epochs on the
# unlabeled pool of configs/splits/pool.txt: imagenet-sample + the train part of the fixed
# caltech101 split (no val or test image). 2,800 steps of 64 on the CPU.
_base_ = ['./mae_vit-tiny-p16_1xb64-15e_imagenet-sample-128px.py']

data_root = '../shared/data/'
img_size = 96
max_epochs = 40

# restated: mmengine fixes the base's pipeline with the base's img_size (128) when it reads it
train_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.4, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, ann_file='{{ fileDirname }}/../splits/pool.txt',
                 pipeline=train_pipeline))
model = dict(backbone=dict(img_size=img_size),
             neck=dict(num_patches=(img_size // 16)**2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=5, max_keep_ckpts=2))
