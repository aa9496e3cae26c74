# SparK baseline for the demo-scale H-GKD student: mmpretrain's own SparK (SparseResNet
# encoder, SparKLightDecoder, pixel loss) pre-trains the same ResNet-18 on the same 900
# images, image size, mask ratio, batch, optimizer and schedule as
# hgkd_vit-tiny-p16_resnet18_1xb32-6e_imagenet-sample-128px.py; only the target differs
# (normalised pixels instead of teacher tokens). One process: SparseBatchNorm2d (the
# SyncBN variant needs a process group). tools/analysis_tools/compare_pretraining.py
# derives its runs from this file.
_base_ = ['./_base_/imagenet-sample_128px_cpu.py', './_base_/student_adamw-6e.py']

img_size = 128

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
