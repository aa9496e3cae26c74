# ConvNeXt-V2-T student (GRN, no LayerScale; GRN's norm over visible positions), MAE
# ViT-B/16 teacher, the recipe of hgkd_r50.py.
_base_ = './hgkd_vit-base-p16_convnext-tiny_8xb512-amp-coslr-800e_in1k.py'
model = dict(backbone=dict(use_grn=True, layer_scale_init_value=0.))
