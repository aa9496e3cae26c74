"""Data transforms."""
from mmcv.transforms import LoadImageFromFile

from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageOrRaise(LoadImageFromFile):
    """``LoadImageFromFile`` whose failure always names the file.

    mmcv's loader reports an undecodable file with an ``assert`` (gone under
    ``python -O``) or, with the pillow backend, without its path.
    """

    def transform(self, results: dict) -> dict:
        path = results.get('img_path')
        try:
            loaded = super().transform(results)
        except Exception as e:
            raise OSError(f'cannot read image {path}: {e}') from e
        if loaded is None or loaded.get('img') is None:
            raise OSError(f'cannot read image {path}: empty or undecodable file')
        return loaded
