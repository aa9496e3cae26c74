# Mask R-CNN ConvNeXt-T FPN, 1x schedule, COCO, from the H-GKD ConvNeXt-T student (the
# output of tools/model_converters/hgkd_to_dense.py). mmdet's ConvNeXt-T baseline (AdamW,
# layer-wise lr decay, AMP, its augmentation) on the 12-epoch schedule of the ResNet configs.
_base_ = 'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'
custom_imports = dict(
    imports=['mmpretrain.models', 'hgkd_mm', 'hgkd_mm.utils.pretrained_check'],
    allow_failed_imports=False)

# The converted H-GKD backbone. Another file: tools/train.py ... --cfg-options checkpoint=PATH
# (hgkd_mm's tools carry it to the init_cfg below; with other tools override
# model.backbone.init_cfg.checkpoint, since mmengine reads this variable once).
checkpoint = 'work_dirs/hgkd_convnext-t/convnext-tiny_dense.pth'
data_hint = ('COCO 2017 is expected under data/coco/ (train2017/, val2017/ and '
             'annotations/instances_{train,val}2017.json), as in mmdet: link it there.')

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1)
]

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
