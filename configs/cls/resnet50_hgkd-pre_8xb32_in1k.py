# Example (docs/downstream.md): the H-GKD ResNet-50 in mmpretrain's plain ResNet-50
# classifier recipe (SGD, 100 epochs).
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'  # model.backbone.init_cfg.checkpoint

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
custom_hooks = [dict(type='StrictPretrainedHook')]
