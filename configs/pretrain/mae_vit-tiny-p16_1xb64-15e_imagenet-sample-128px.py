# Demo stage 1: mmpretrain's own MAE pretrains a small ViT teacher on the 900 training
# images of ../shared/data/imagenet-sample (the demo holds out 100; tools/demo.py writes
# the split files). CPU-sized: 128 px, ViT with 6 layers of width 192.
_base_ = ['./_base_/imagenet-sample_128px_cpu.py']

img_size = 128
vit_arch = dict(embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768)

train_pipeline = [
    dict(type='LoadImageOrRaise'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.4, 1.0), backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=train_pipeline))

model = dict(
    type='MAE',
    backbone=dict(type='MAEViT', arch=vit_arch, img_size=img_size, patch_size=16,
                  mask_ratio=0.75),
    neck=dict(type='MAEPretrainDecoder', num_patches=(img_size // 16)**2, patch_size=16,
              embed_dim=192, decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
              mlp_ratio=4.),
    head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=16,
              loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[dict(type='Xavier', layer='Linear', distribution='uniform'),
              dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)])

max_epochs = 15
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, fused=True),
    paramwise_cfg=dict(custom_keys={
        'ln': dict(decay_mult=0.0), 'bias': dict(decay_mult=0.0), 'pos_embed': dict(decay_mult=0.),
        'mask_token': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(checkpoint=dict(interval=5))
