# hgkd_r50.py with the JPEGs decoded on the GPU, for hosts with few CPU cores per GPU: the
# dataloader workers only read the files and draw the crop boxes and flips (the draws of
# RandomResizedCrop + RandomFlip); the data preprocessor decodes the batch with nvJPEG
# (torchvision.io.decode_jpeg(device='cuda')), crops, resizes (antialiased bicubic), flips
# and normalises it on the GPU. Without CUDA it warns and decodes on the CPU, slowly.
_base_ = './hgkd_r50.py'

train_pipeline = [
    dict(type='LoadJpegCropParams', scale=224, crop_ratio_range=(0.67, 1.0), flip_prob=0.5),
    dict(type='PackInputs',
         meta_keys=('img_path', 'ori_shape', 'img_shape', 'crop_box', 'flip',
                    'flip_direction')),
]
train_dataloader = dict(
    dataset=dict(pipeline=train_pipeline),
    # the files differ in length: a list, not a stacked tensor
    collate_fn=dict(_delete_=True, type='pseudo_collate'))
model = dict(
    data_preprocessor=dict(
        type='JpegDecodeDataPreprocessor', interpolation='bicubic',
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True,
        non_blocking=True))
