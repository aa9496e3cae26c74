# ResNetV1d-50 student (deep stem, average-pool downsampling), MAE ViT-B/16 teacher.
_base_ = './hgkd_vit-base-p16_resnetv1c50_8xb512-amp-coslr-800e_in1k.py'
model = dict(backbone=dict(type='HGKDSparseResNetV1d'))
