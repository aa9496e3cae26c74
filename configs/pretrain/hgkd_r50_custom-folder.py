# H-GKD on your own images: every image below one folder (subfolders allowed, no labels;
# JPEG, PNG, WebP, BMP, TIFF; grayscale and CMYK are read as RGB; images smaller than the
# crop are upsampled), otherwise the paper-scale recipe of hgkd_r50.py.
#   python tools/train.py configs/pretrain/hgkd_r50_custom-folder.py \
#       --cfg-options train_dataloader.dataset.data_root=/data/my_images
# A folder without images stops before training, naming it; a file that cannot be read
# stops the run, naming the file. Another teacher file: model.teacher.checkpoint=PATH.
_base_ = './hgkd_r50.py'

data_root = None  # required: train_dataloader.dataset.data_root=DIR
data_hint = ('Set the image folder with --cfg-options '
             'train_dataloader.dataset.data_root=DIR (configs/pretrain/hgkd_r50_custom-folder.py).')
train_dataloader = dict(
    dataset=dict(_delete_=True, type='ImageFolderDataset', data_root=data_root,
                 pipeline={{_base_.train_pipeline}}))
