# ResNet-101 student.
_base_ = './hgkd_r50.py'
model = dict(backbone=dict(depth=101))
