# As the 1x config, with the 2x schedule of mmselfsup's mask-rcnn_r50_fpn_ms-2x_coco.py
# (24 epochs, lr steps at 16 and 22, 1,000 warm-up iterations).
_base_ = './mask-rcnn_r50-hgkd-pre_fpn_syncbn_1x_coco.py'

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 22],
         gamma=0.1)
]
