# Example (docs/downstream.md): the H-GKD ResNet-50 in another mmseg model. The base's
# dilations and strides (output stride 8) apply to the standard-stem ResNet as well.
_base_ = 'mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'  # model.backbone.init_cfg.checkpoint

model = dict(
    pretrained=None,
    backbone=dict(
        type='ResNet',
        depth=50,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
custom_hooks = [dict(type='StrictPretrainedHook')]
