# ConvNeXt-T student (mmpretrain's ConvNeXt made sparse by SparseCNN: convolutions and
# LayerNorms on visible positions), MAE ViT-B/16 teacher, the recipe of hgkd_r50.py.
# Another teacher file: --cfg-options model.teacher.checkpoint=PATH
_base_ = './hgkd_r50.py'
model = dict(
    backbone=dict(
        _delete_=True, type='HGKDSparseConvNeXt', arch='tiny', drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=(96, 192, 384, 768), in_strides=(4, 8, 16, 32)))
