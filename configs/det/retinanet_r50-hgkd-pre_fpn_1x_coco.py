# Example (docs/downstream.md): the H-GKD ResNet-50 in another mmdet detector.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'  # model.backbone.init_cfg.checkpoint

model = dict(
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),  # 2 images per GPU: sync the stats
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))
custom_hooks = [dict(type='StrictPretrainedHook')]
