# ResNetV1c-50 student (deep stem: three 3x3 convolutions), MAE ViT-B/16 teacher, the
# recipe of hgkd_r50.py. Through SparseCNN (the masked semantics), not the packed backend
# of the standard ResNet.
_base_ = './hgkd_r50.py'
model = dict(
    backbone=dict(
        _delete_=True, type='HGKDSparseResNetV1c', depth=50, out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN'), drop_path_rate=0.05),
    neck=dict(in_channels=(256, 512, 1024, 2048), in_strides=(4, 8, 16, 32)))
