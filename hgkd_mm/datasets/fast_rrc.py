"""Load and random-resized-crop in one transform: a JPEG is decoded at reduced size when
the crop allows it, and only the crop is resized."""
import io
import warnings
from types import SimpleNamespace
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.image.geometric import pillow_interp_codes
from mmengine import fileio
from PIL import Image, ImageOps

from mmpretrain.datasets.transforms import RandomResizedCrop
from mmpretrain.registry import TRANSFORMS

try:  # libjpeg-turbo straight into numpy: a fifth faster than PIL's decode
    import simplejpeg
except ImportError:
    simplejpeg = None

EXIF_ORIENTATION = 0x0112
JPEG_START = b'\xff\xd8'
EXIF_SEARCH = 4096  # bytes from the start in which a JPEG's EXIF block is looked for
# the reductions libjpeg's DCT scaling gives through PIL's draft mode, largest first
DRAFT_SCALES = (8, 4, 2, 1)
# torch's antialiased resize of uint8 images: pillow's filters (bicubic a=-0.5)
TORCH_INTERPOLATIONS = ('bilinear', 'bicubic')


def draft_scale(crop_hw: Tuple[int, int], out_hw: Tuple[int, int]) -> int:
    """The largest JPEG DCT reduction (8, 4, 2 or 1) after which a crop of ``crop_hw``
    full-size pixels still has at least ``out_hw`` pixels: the resize then only shrinks,
    as it does from the full-size decode (1 for a crop that is enlarged)."""
    return next((s for s in DRAFT_SCALES
                 if crop_hw[0] >= out_hw[0] * s and crop_hw[1] >= out_hw[1] * s), 1)


def torch_resize(image: np.ndarray, size: Tuple[int, int], interpolation: str) -> np.ndarray:
    """(h, w, 3) ``uint8`` -> (*size, 3) ``uint8`` with torch's antialiased resize (its
    vectorised ``uint8`` kernel, one thread in a dataloader worker), as pillow's
    ``resize`` up to rounding."""
    with warnings.catch_warnings():  # PIL's arrays are read-only; torch only reads it
        warnings.simplefilter('ignore', UserWarning)
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, h, w), NHWC memory
    resized = F.interpolate(pixels, size=tuple(size), mode=interpolation, antialias=True,
                            align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


class FlipDraw:
    """``RandomFlip(prob=prob, direction='horizontal')``'s draw without its
    ``np.random.choice``: that takes one ``random_sample()`` and flips when it is below the
    first value of the normalised cdf of ``[prob, 1 - prob]``. The same flips, and the same
    RNG state after them, for the same seed; ``prob`` is refused as ``RandomFlip`` refuses
    it (not a float in [0, 1]), naming ``owner``'s flip_prob."""

    def __init__(self, prob: float, owner: str):
        if not (isinstance(prob, float) and 0 <= prob <= 1):
            raise ValueError(f'{owner}: flip_prob must be in [0, 1], got {prob!r} (a float, '
                             "as RandomFlip's prob)")
        cdf = np.cumsum([prob, 1.0 - prob])
        self.below = cdf[0] / cdf[-1]

    def __call__(self, results: dict) -> bool:
        """Draw, set ``flip`` and ``flip_direction`` in ``results``, return the flip."""
        flip = bool(np.random.random_sample() < self.below)
        results['flip'] = flip
        results['flip_direction'] = 'horizontal' if flip else None
        return flip


@TRANSFORMS.register_module()
class LoadRandomResizedCrop(RandomResizedCrop):
    """``LoadImageFromFile`` + mmpretrain's ``RandomResizedCrop`` in one step, faster.

    The crop box is drawn by ``RandomResizedCrop.rand_crop_params`` from the size in the
    file's header, with the same draws from numpy's RNG: the same boxes for the same
    seed (``crop_box``: top, left, height, width). A JPEG is then decoded at 1/2, 1/4 or
    1/8 size (libjpeg-turbo's DCT scaling, through ``simplejpeg`` where it is installed,
    else PIL's draft mode) when the crop keeps at least the output size, and only the
    crop is resized. The result is ``uint8`` (H, W, 3) in BGR
    order like mmcv's loaders, so ``RandomFlip``, ``PackInputs`` and the data
    preprocessor's ``to_rgb`` work as after ``LoadImageFromFile``; normalisation stays in
    the data preprocessor, on the device.

    Args:
        scale, crop_ratio_range, aspect_ratio_range, max_attempts, interpolation: as
            ``RandomResizedCrop``.
        backend (str): the resize. ``'torch'`` (default): torch's antialiased ``uint8``
            resize, pillow's filters (``'bilinear'`` or ``'bicubic'``) within a level or
            two of pillow's result and several times faster; from a reduced decode the
            crop is taken to the nearest reduced pixel. ``'pillow'``: pillow's resize of
            the exact box; without ``draft`` the pixels of ``LoadImageFromFile
            (imdecode_backend='pillow')`` + ``RandomResizedCrop(backend='pillow')``.
        draft (bool): decode JPEGs at reduced size when the crop allows it.
        flip_prob (float): probability of a horizontal flip, drawn after the crop box as
            ``RandomFlip(prob=flip_prob)`` draws it (the same flips for the same seed,
            without its ``np.random.choice``, a few percent of the loader's time); sets
            ``flip`` and ``flip_direction``. Only the image is flipped: the pre-training
            pipelines have no boxes or maps. 0 (default): no draw; a ``RandomFlip`` may
            follow.
        backend_args (dict, optional): mmengine file backend arguments.

    A file that cannot be read or decoded raises ``OSError`` naming it.
    """

    def __init__(self, *args, backend: str = 'torch', draft: bool = True,
                 flip_prob: float = 0.0, backend_args: Optional[dict] = None, **kwargs):
        super().__init__(*args, backend=backend, **kwargs)
        self.flip_prob = flip_prob
        self.draw_flip = FlipDraw(flip_prob, 'LoadRandomResizedCrop')
        allowed = dict(torch=TORCH_INTERPOLATIONS, pillow=tuple(pillow_interp_codes))
        if backend not in allowed:
            raise ValueError(f"LoadRandomResizedCrop: backend must be 'torch' or 'pillow', "
                             f'got {backend!r}')
        if self.interpolation not in allowed[backend]:
            raise ValueError(f'LoadRandomResizedCrop: interpolation must be one of '
                             f'{sorted(allowed[backend])} with backend {backend!r}, got '
                             f'{self.interpolation!r}')
        self.draft = draft
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            bgr, ori_shape, crop_box = self._load_crop(
                fileio.get(path, backend_args=self.backend_args))
        except Exception as e:
            raise OSError(f'cannot read image {path}: {type(e).__name__}: {e}') from e
        results['img'] = bgr
        results['img_shape'] = bgr.shape[:2]
        results['ori_shape'] = ori_shape
        results['crop_box'] = crop_box
        if self.flip_prob > 0 and self.draw_flip(results):
            results['img'] = bgr[:, ::-1]  # a view, as mmcv.imflip's
        return results

    def _open(self, data: bytes) -> Tuple[int, int, Optional[Image.Image]]:
        """(height, width) of the upright image and, unless simplejpeg decodes it, its PIL
        image (header read; decoded already if it had to be turned upright)."""
        fast = simplejpeg is not None and self.backend == 'torch' and data[:2] == JPEG_START
        if fast and data.find(b'Exif', 0, EXIF_SEARCH) < 0:  # no EXIF: upright
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            return height, width, None
        image = Image.open(io.BytesIO(data))
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            # turned upright, as by cv2.imdecode in mmcv's loader; the crop is drawn on the
            # upright image, so it is decoded whole (rare in photo datasets)
            image = ImageOps.exif_transpose(image)
        elif fast:
            return image.height, image.width, None
        return image.height, image.width, image

    def _load_crop(self, data: bytes) -> Tuple[np.ndarray, Tuple[int, int], tuple]:
        """(out_h, out_w, 3) BGR ``uint8`` crop of the encoded image ``data``, the full
        (h, w) and the crop box (top, left, height, width)."""
        height, width, image = self._open(data)
        crop_box = self.rand_crop_params(SimpleNamespace(shape=(height, width)))
        top, left, crop_h, crop_w = crop_box
        out_h, out_w = self.scale
        scale = draft_scale((crop_h, crop_w), (out_h, out_w)) if self.draft else 1
        pixels = None
        if image is None:
            try:  # factors >= scale, at least the size of a 1 / scale decode: 1 / scale
                pixels = simplejpeg.decode_jpeg(data, colorspace='BGR', min_factor=scale,
                                                min_height=-(-height // scale),
                                                min_width=-(-width // scale))
            except ValueError:  # e.g. CMYK, which PIL converts; PIL names other faults
                image = Image.open(io.BytesIO(data))
        if image is not None:
            drafted = image.draft('RGB', (width // scale, height // scale)) if scale > 1 \
                else None
            # draft() answers for JPEGs only, with the reduced extent in full-size units
            scale = width / drafted[1][2] if drafted else 1
            if image.mode != 'RGB':
                image = image.convert('RGB')
            if self.backend == 'pillow':
                resized = self._pillow_resize(image, crop_box, scale)[..., ::-1]
                return resized, (height, width), crop_box
            pixels = np.asarray(image)
        scale = width / pixels.shape[1]
        top, left, bottom, right = (round(v / scale) for v in
                                    (top, left, top + crop_h, left + crop_w))
        resized = torch_resize(pixels[top:bottom, left:right], (out_h, out_w),
                               self.interpolation)
        if image is not None:  # PIL decodes RGB
            resized = resized[..., ::-1]
        return resized, (height, width), crop_box

    def _pillow_resize(self, image: Image.Image, crop_box: tuple, scale: float) -> np.ndarray:
        """The crop box of the full-size image, of ``image`` reduced by ``scale``, resized
        by pillow."""
        top, left, crop_h, crop_w = crop_box
        out_h, out_w = self.scale
        resample = pillow_interp_codes[self.interpolation]
        if scale == 1:  # crop first: the filter sees only the crop, as RandomResizedCrop's
            image = image.crop((left, top, left + crop_w, top + crop_h))
            return np.asarray(image.resize((out_w, out_h), resample))
        box = (left / scale, top / scale, (left + crop_w) / scale, (top + crop_h) / scale)
        return np.asarray(image.resize((out_w, out_h), resample, box=box))
