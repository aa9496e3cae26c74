# Mask R-CNN R50-FPN, 1x schedule, COCO, from the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py). As mmpretrain's self-supervised detection
# benchmarks (mmpretrain's byol/benchmarks/mask-rcnn_r50_fpn_ms-1x_coco.py): SyncBN in
# backbone, neck and heads, no frozen stages, BN statistics trained, multi-scale training.
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

# Multi-scale training: the short side is one of 640-800.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
