# ImageNet-1k fine-tuning of the H-GKD ResNet-50 (the output of
# tools/model_converters/hgkd_to_dense.py), 300 epochs: the recipe of mmpretrain's SparK
# ResNet-50 benchmark (RSB-style augmentation, Mixup/CutMix, Lamb with layer-wise lr decay,
# cosine schedule, SyncBN).
_base_ = 'mmpretrain::spark/benchmarks/resnet50_8xb256-coslr-300e_in1k.py'
custom_imports = dict(
    imports=['hgkd_mm', 'hgkd_mm.utils.pretrained_check'], allow_failed_imports=False)

# Read once when the config is parsed: to use another file, override the key it fills,
# --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = 'work_dirs/hgkd_r50/resnet50_dense.pth'
data_hint = ('ImageNet-1K is expected under data/imagenet/ (train/, val/ and meta/ as in '
             'mmpretrain): link it there or set data_root.')

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')))

# mmengine's Pretrained init only warns on missing keys; this makes it an error.
custom_hooks = [dict(type='StrictPretrainedHook')]
