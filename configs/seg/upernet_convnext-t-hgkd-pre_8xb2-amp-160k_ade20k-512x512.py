# UperNet ConvNeXt-T, ADE20K 512x512, 160k iterations, from the H-GKD ConvNeXt-T student
# (the output of tools/model_converters/hgkd_to_dense.py): mmseg's ConvNeXt-T baseline with
# the converted backbone.
_base_ = 'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'
custom_imports = dict(
    imports=['mmpretrain.models', 'hgkd_mm', 'hgkd_mm.utils.pretrained_check'],
    allow_failed_imports=False)

# The converted H-GKD backbone. Another file: tools/train.py ... --cfg-options checkpoint=PATH
# (hgkd_mm's tools carry it to the init_cfg below; with other tools override
# model.backbone.init_cfg.checkpoint, since mmengine reads this variable once).
checkpoint = 'work_dirs/hgkd_convnext-t/convnext-tiny_dense.pth'
data_hint = ('ADE20K is expected under data/ade/ADEChallengeData2016/ (images/ and annotations/, '
             'training/ and validation/), as in mmseg: link it there or set data_root.')

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
