# Schedule of the demo-scale students (H-GKD and its SparK baseline): fused AdamW, clip 5,
# one warm-up epoch, cosine decay, 6 epochs.
max_epochs = 6
optim_wrapper = dict(
    type='OptimWrapper',
    # mmengine's default constructor, without a warning per frozen teacher parameter
    constructor='FrozenAwareOptimWrapperConstructor',
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
