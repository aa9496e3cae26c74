# Mask R-CNN R50-FPN, 1x schedule, COCO, from the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py). As mmpretrain's self-supervised detection
# benchmarks: SyncBN in backbone, neck and heads, no frozen stages, BN statistics trained.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

# The converted H-GKD backbone. Another file: tools/train.py ... --cfg-options checkpoint=PATH
# (hgkd_mm's tools carry it to the init_cfg below; with other tools override
# model.backbone.init_cfg.checkpoint, since mmengine reads this variable once).
checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'
data_hint = ('COCO 2017 is expected under data/coco/ (train2017/, val2017/ and '
             'annotations/instances_{train,val}2017.json), as in mmdet: link it there.')

norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
