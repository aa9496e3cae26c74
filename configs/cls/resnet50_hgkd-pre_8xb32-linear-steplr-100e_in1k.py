# ImageNet-1k linear probe of the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py): frozen backbone (BN in eval mode), SGD lr 30,
# step schedule, 100 epochs, as mmpretrain's MoCo v2 linear benchmark.
_base_ = 'mmpretrain::mocov2/benchmarks/resnet50_8xb32-linear-steplr-100e_in1k.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

# The converted H-GKD backbone. Another file: tools/train.py ... --cfg-options checkpoint=PATH
# (hgkd_mm's tools carry it to the init_cfg below; with other tools override
# model.backbone.init_cfg.checkpoint, since mmengine reads this variable once).
checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'
data_hint = ('ImageNet-1K is expected under data/imagenet/ (train/, val/ and meta/ as in '
             'mmpretrain): link it there or set data_root.')

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
