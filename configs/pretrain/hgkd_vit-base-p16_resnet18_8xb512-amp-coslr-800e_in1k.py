# ResNet-18 student (BasicBlock stages: 64, 128, 256, 512 channels).
_base_ = './hgkd_r50.py'
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=(64, 128, 256, 512)))
