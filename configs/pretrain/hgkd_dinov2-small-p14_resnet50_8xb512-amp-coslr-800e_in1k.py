# DINOv2 ViT-S/14 teacher (official release; timm's vit_small_patch14_dinov2 state dict
# works too), ResNet-50 student, the paper-scale recipe of hgkd_r50.py.
# Patch 14 does not divide the student's stride-32 mask cell: the decoder works at stride
# 16 and is resized onto the teacher's 16x16 grid (224 px), and a teacher patch is a loss
# position when at least half of its area lies in masked cells (docs/students_teachers.md).
# Another teacher file: --cfg-options model.teacher.checkpoint=PATH
_base_ = './hgkd_r50.py'
teacher_checkpoint = ('https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/'
                      'dinov2_vits14_pretrain.pth')
model = dict(
    teacher=dict(
        # the position embedding is trained at 518 px (37x37 patches), resized to the input
        arch='dinov2-s', img_size=518, patch_size=14, layer_scale_init_value=1e-5,
        checkpoint=teacher_checkpoint))
