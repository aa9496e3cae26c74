# MobileNetV2 student (width 1.0; stages returned at strides 4, 8, 16, 32: layers 2, 3, 5
# and the final 1x1 conv), MAE ViT-B/16 teacher, the recipe of hgkd_r50.py; SyncBN runs as
# the masked SyncBN.
_base_ = './hgkd_r50.py'
model = dict(
    backbone=dict(
        _delete_=True, type='HGKDSparseMobileNetV2', widen_factor=1.0,
        out_indices=(1, 2, 4, 7), norm_cfg=dict(type='SyncBN')),
    neck=dict(in_channels=(24, 32, 96, 1280), in_strides=(4, 8, 16, 32)))
