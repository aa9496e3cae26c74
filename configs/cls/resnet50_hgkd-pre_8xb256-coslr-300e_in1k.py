# ImageNet-1k fine-tuning of the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py), 300 epochs: the recipe of mmpretrain's SparK
# ResNet-50 benchmark (RSB-style augmentation, Mixup/CutMix, Lamb with layer-wise lr decay,
# cosine schedule, SyncBN).
_base_ = 'mmpretrain::spark/benchmarks/resnet50_8xb256-coslr-300e_in1k.py'
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
