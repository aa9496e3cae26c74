# H-GKD, paper-scale recipe (docs/method.md, "Paper-scale recipe"):
# MAE ViT-B/16 (mmpretrain zoo, 1600 e) teaches a sparse ResNet-50 on ImageNet-1K,
# 224 px, mask ratio 0.6, LAMB, 800 epochs, batch 4096 (8 GPUs x 512), AMP, SyncBN.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs512_mae.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['hgkd_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = 'data/imagenet/'
data_hint = ('ImageNet-1K is expected under data/imagenet/ (train/ with one folder per class, '
             'as mmpretrain). Without it, run the offline demo: `make demo` (README.md).')
teacher_checkpoint = ('https://download.openmmlab.com/mmselfsup/1.x/mae/'
                      'mae_vit-base-p16_8xb512-fp16-coslr-1600e_in1k/'
                      'mae_vit-base-p16_8xb512-fp16-coslr-1600e_in1k_20220825-f7569ca2.pth')

# mmpretrain's LoadImageFromFile + RandomResizedCrop + RandomFlip in one transform: the
# same crop boxes, flips and bicubic resize, the JPEG decoded at 1/2-1/8 size when the crop
# allows it and only the crop resized (torch's antialiased uint8 resize); uint8 until the
# data preprocessor normalises on the device. Per dataloader worker about 3x mmpretrain's
# pipeline (docs/data_pipeline.md). A GPU-decoding variant: hgkd_r50_gpu-decode.py.
train_pipeline = [
    dict(type='LoadRandomResizedCrop', scale=224, crop_ratio_range=(0.67, 1.0),
         interpolation='bicubic', flip_prob=0.5),  # RandomFlip(prob=0.5)'s draws
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=512, num_workers=8,
    # page-locked batches, copied to the GPU while the step runs (non_blocking below)
    pin_memory=True,
    # every step the timed shape: no partial last batch (as MAE's own training), so the
    # compiled student is not compiled again at the end of the first epoch
    drop_last=True,
    dataset=dict(data_root=data_root, pipeline=train_pipeline),
    # restated: inherited across packages it carries `_scope_`, which mmengine's Runner
    # passes to the collate function as an argument
    collate_fn=dict(_delete_=True, type='default_collate'))
data_preprocessor = dict(non_blocking=True)

model = dict(
    type='HGKD',
    mask_ratio=0.6,
    compile='auto',  # torch.compile of the student's step on CUDA (eager fallback); False: off
    # ... with the teacher's forward in the same compiled function, ...
    compile_teacher=True,
    # ... replayed from CUDA graphs in a single process; refuses gradient accumulation
    cuda_graphs='auto',
    # student activations and weights channels-last (cuDNN's bf16 convolutions work in NHWC)
    # H100, batch 128, bf16, 2026-11-27 (docs/benchmarks.md): these three together 3,174
    # img/s, 5.50x mmpretrain's SparK + teacher; CUDA graphs alone 2,774 img/s (4.81x)
    channels_last=True,
    backbone=dict(
        # 'packed': 1x1 convs, norms and elementwise ops on the visible positions only
        # (1.22x-1.26x the step of 'masked' on the CPU; docs/benchmarks.md, "Defaults and why")
        type='HGKDSparseResNet', depth=50, backend='packed', out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='MaskedSyncBatchNorm2d'), drop_path_rate=0.05),
    neck=dict(
        type='HGKDUNetDecoder', in_channels=(256, 512, 1024, 2048), in_strides=(4, 8, 16, 32),
        channels=256, norm_cfg=dict(type='SyncBN'), sync_masked_norm=True),
    # loss at the visible positions: +9.3 points over the masked ones on the val probe
    # of docs/results.md (loss_on='masked' is the paper's masked-prediction reading)
    head=dict(type='HGKDDistillHead', target_norm='layernorm', loss='mse', loss_on='visible'),
    teacher=dict(
        type='FrozenViTTeacher', arch='base', img_size=224, patch_size=16, out_layers=(-1, ),
        input_mode='full', checkpoint=teacher_checkpoint))

# LAMB, lr 2e-4 x batch / 256, weight decay 0.04 -> 0.2 (cosine)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    # mmengine's default constructor, without a warning per frozen teacher parameter
    constructor='FrozenAwareOptimWrapperConstructor',
    dtype='bfloat16',
    # bf16 has float32's exponent range: no loss scaling, and no GradScaler reading its
    # inf check back to the host inside every step (mmengine's default is 'dynamic')
    loss_scale=dict(enabled=False),
    # mmpretrain's Lamb computed with multi-tensor ops (same update and checkpoints)
    optimizer=dict(type='ForeachLamb', lr=2e-4 * 4096 / 256, betas=(0.9, 0.95),
                   weight_decay=0.04),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(bias_decay_mult=0.0, flat_decay_mult=0.0,
                       custom_keys={'mask_tokens': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=40,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=760, by_epoch=True, begin=40, end=800,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingWeightDecay', eta_min=0.2, T_max=800, by_epoch=True, begin=0,
         end=800, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=800)
auto_scale_lr = dict(base_batch_size=4096)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
# DeferredGradNormHook: the clipped gradient norm is logged after the iteration, so the
# step has no host sync between the backward pass and the optimizer (hgkd_mm/engine/hooks.py)
# ThroughputHook: img/s and the share of time waiting for data in every log line
custom_hooks = [dict(type='RNGStateHook'), dict(type='DeferredGradNormHook'),
                dict(type='ThroughputHook')]
# fixed 224 px input: let cuDNN pick its fastest convolutions, as the speed benchmark does
# (tools/analysis_tools/benchmark_pretrain.py; mmpretrain's default runtime leaves it off)
# a rank that stops answering (a hung node) fails every collective after 30 minutes instead
# of blocking the job; a killed rank ends it at once (torchrun stops the others)
env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(timeout=1800))
randomness = dict(seed=0, diff_rank_seed=True)
