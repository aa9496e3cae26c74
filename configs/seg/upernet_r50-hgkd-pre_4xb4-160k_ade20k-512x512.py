# UperNet R50, ADE20K 512x512, 160k iterations, from the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py). The student has the standard ResNet stem,
# so the backbone is mmseg's `ResNet`, not the base config's deep-stem `ResNetV1c`.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

# The converted H-GKD backbone. Another file: tools/train.py ... --cfg-options checkpoint=PATH
# (hgkd_mm's tools carry it to the init_cfg below; with other tools override
# model.backbone.init_cfg.checkpoint, since mmengine reads this variable once).
checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'
data_hint = ('ADE20K is expected under data/ade/ADEChallengeData2016/ (images/ and annotations/, '
             'training/ and validation/), as in mmseg: link it there or set data_root.')

model = dict(
    pretrained=None,  # mmseg refuses `pretrained` together with the backbone's init_cfg
    backbone=dict(
        type='ResNet',
        depth=50,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
