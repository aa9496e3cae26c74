"""Every image below one folder, at any depth, without labels (pretraining on your own
images)."""
import os.path as osp
from typing import Optional, Sequence

from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.ppm', '.pgm', '.tif', '.tiff')


@DATASETS.register_module()
class ImageFolderDataset(CustomDataset):
    """The image files below ``data_root`` (flat or nested, extensions in any case).

    mmpretrain's ``CustomDataset`` with ``with_label=False``, which lists files
    recursively; this one refuses a missing or unset folder and a folder without images
    by name, when the dataset is built (before the first iteration). Images are decoded
    by the pipeline's loader (``LoadImageOrRaise`` names a file it cannot read).

    Args:
        data_root (str): the folder (``train_dataloader.dataset.data_root``).
        extensions (Sequence[str]): file name endings taken as images.
        **kwargs: other ``CustomDataset`` arguments (``pipeline``, ...).
    """

    def __init__(self, data_root: Optional[str] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, **kwargs):
        if not data_root or not isinstance(data_root, str):
            raise ValueError('ImageFolderDataset: no image folder given; set it with '
                             '--cfg-options train_dataloader.dataset.data_root=DIR '
                             f'(got {data_root!r})')
        if '://' not in data_root and not osp.isdir(data_root):
            raise FileNotFoundError(f'ImageFolderDataset: image folder {data_root!r} '
                                    '(data_root) does not exist or is not a folder')
        super().__init__(data_root=data_root, with_label=False, extensions=extensions,
                         **kwargs)

    def _find_samples(self):
        try:
            return super()._find_samples()
        except RuntimeError:  # mmpretrain's "Found 0 files"
            raise FileNotFoundError(
                f'ImageFolderDataset: no images in {self.img_prefix!r} or its subfolders '
                f"(looked for {', '.join(sorted(self.extensions))}, any case)") from None
