# ViT-L/16 teacher (MAE, mmpretrain zoo, 1600 e).
_base_ = './hgkd_r50.py'
teacher_checkpoint = ('https://download.openmmlab.com/mmselfsup/1.x/mae/'
                      'mae_vit-large-p16_8xb512-fp16-coslr-1600e_in1k/'
                      'mae_vit-large-p16_8xb512-fp16-coslr-1600e_in1k_20220825-cc7e98c9.pth')
model = dict(teacher=dict(arch='large', checkpoint=teacher_checkpoint))
