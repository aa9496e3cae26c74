from .fast_rrc import LoadRandomResizedCrop
from .gpu_decode import JpegDecodeDataPreprocessor, LoadJpegCropParams
from .image_folder import ImageFolderDataset
from .sample_seed import SeedSample, seed_samples
from .transforms import LoadImageOrRaise

__all__ = ['ImageFolderDataset', 'JpegDecodeDataPreprocessor', 'LoadImageOrRaise',
           'LoadJpegCropParams', 'LoadRandomResizedCrop', 'SeedSample', 'seed_samples']
