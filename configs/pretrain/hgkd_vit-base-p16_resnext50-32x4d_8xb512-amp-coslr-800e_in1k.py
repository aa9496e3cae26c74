# ResNeXt-50 (32x4d) student, MAE ViT-B/16 teacher, the recipe of hgkd_r50.py.
_base_ = './hgkd_r50.py'
model = dict(
    backbone=dict(
        _delete_=True, type='HGKDSparseResNeXt', depth=50, groups=32, width_per_group=4,
        out_indices=(0, 1, 2, 3), norm_cfg=dict(type='SyncBN'), drop_path_rate=0.05),
    neck=dict(in_channels=(256, 512, 1024, 2048), in_strides=(4, 8, 16, 32)))
