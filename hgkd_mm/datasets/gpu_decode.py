"""JPEG decoding, random-resized-crop and flip on the GPU, in the data preprocessor.

The dataloader workers only read the files and draw the augmentation
(``LoadJpegCropParams``); ``JpegDecodeDataPreprocessor`` decodes the batch with nvJPEG
(``torchvision.io.decode_jpeg(device='cuda')``), crops, resizes, flips and normalises it
on the device. For hosts with few CPU cores per GPU.
"""
from __future__ import annotations

import io
import logging
from types import SimpleNamespace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine import fileio
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_jpeg

from mmpretrain.datasets.transforms import RandomResizedCrop
from mmpretrain.models.utils import SelfSupDataPreprocessor
from mmpretrain.registry import MODELS, TRANSFORMS

from .fast_rrc import EXIF_ORIENTATION, FlipDraw

# interpolations torch resizes with an antialiasing filter as pillow does
TORCH_MODES = {'bilinear': 'bilinear', 'bicubic': 'bicubic'}
META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'crop_box', 'flip', 'flip_direction')


@TRANSFORMS.register_module()
class LoadJpegCropParams(RandomResizedCrop):
    """Read a JPEG's bytes and draw its random-resized-crop box and flip; decode nothing.

    The box comes from ``RandomResizedCrop.rand_crop_params`` on the size in the file's
    header, the flip from ``RandomFlip(prob=flip_prob)``'s draw, in that order: the same
    draws as ``RandomResizedCrop`` + ``RandomFlip`` (or ``LoadRandomResizedCrop`` +
    ``RandomFlip``) for the same seed. Sets ``img`` (the file, 1-D ``uint8``; a file the GPU
    decoder may not take, with an EXIF rotation or neither RGB nor grayscale, comes
    decoded here as (H, W, 3) RGB, upright), ``crop_box`` (top, left, height, width),
    ``flip``, ``flip_direction``, ``img_shape`` (the output size) and ``ori_shape``. Pack
    with ``PackInputs(meta_keys=META_KEYS)`` and collate with ``pseudo_collate``.

    Args:
        scale, crop_ratio_range, aspect_ratio_range, max_attempts: as
            ``RandomResizedCrop``; ``interpolation`` is the data preprocessor's.
        flip_prob (float): probability of a horizontal flip.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self, *args, flip_prob: float = 0.5, backend_args: Optional[dict] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.draw_flip = FlipDraw(flip_prob, 'LoadJpegCropParams')
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        try:
            encoded = fileio.get(path, backend_args=self.backend_args)
            image = Image.open(io.BytesIO(encoded))
            upright = (image.format == 'JPEG' and image.mode in ('RGB', 'L')
                       and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
            if upright:  # writable, as torch.from_numpy wants it
                data = np.frombuffer(bytearray(encoded), dtype=np.uint8)
            else:
                image = ImageOps.exif_transpose(image).convert('RGB')
                data = np.asarray(image)
        except Exception as e:
            raise OSError(f'cannot read image {path}: {e}') from e
        width, height = image.size
        results['crop_box'] = self.rand_crop_params(SimpleNamespace(shape=(height, width)))
        self.draw_flip(results)
        results['img'] = data
        results['img_shape'] = tuple(self.scale)
        results['ori_shape'] = (height, width)
        return results


def crop_resize_flip(image: torch.Tensor, crop_box: Sequence[int], size: Tuple[int, int],
                     flip: bool, interpolation: str = 'bicubic') -> torch.Tensor:
    """(3, H, W) ``uint8`` -> (3, *size) ``uint8``: the crop box (top, left, height,
    width), resized with an antialiasing filter (as pillow) and flipped horizontally if
    ``flip``. Runs on the image's device."""
    top, left, height, width = crop_box
    crop = image[None, :, top:top + height, left:left + width].float()
    resized = F.interpolate(crop, size=tuple(size), mode=TORCH_MODES[interpolation],
                            antialias=True, align_corners=False)[0]
    if flip:
        resized = resized.flip(-1)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


@MODELS.register_module()
class JpegDecodeDataPreprocessor(SelfSupDataPreprocessor):
    """``SelfSupDataPreprocessor`` that first decodes the batch of ``LoadJpegCropParams``.

    JPEGs are decoded in one batched nvJPEG call on the model's CUDA device, then each
    image is cropped, resized (``interpolation``, antialiased), flipped and stacked,
    (B, 3, H, W) ``uint8`` in BGR order, as ``LoadImageFromFile`` + ``RandomResizedCrop`` +
    ``RandomFlip`` + ``PackInputs`` would give it; ``to_rgb``, ``mean`` and ``std`` then
    apply as in ``SelfSupDataPreprocessor``. Without CUDA (or without torchvision's GPU
    decoder) it logs a warning once and decodes on the CPU, in the main process.

    Args:
        interpolation (str): ``'bicubic'`` or ``'bilinear'``.
        Others: as ``SelfSupDataPreprocessor``.
    """

    def __init__(self, *args, interpolation: str = 'bicubic', **kwargs):
        super().__init__(*args, **kwargs)
        if interpolation not in TORCH_MODES:
            raise ValueError(f'JpegDecodeDataPreprocessor: interpolation must be one of '
                             f'{sorted(TORCH_MODES)}, got {interpolation!r}')
        self.interpolation = interpolation
        self._gpu_decode = True  # until it fails once

    def forward(self, data: dict, training: bool = False):
        encoded, samples = data['inputs'], data['data_samples']
        if not isinstance(encoded, list) or not samples:
            raise ValueError('JpegDecodeDataPreprocessor needs the batch of LoadJpegCropParams '
                             "collated as a list: collate_fn=dict(type='pseudo_collate')")
        missing = [key for key in ('crop_box', 'flip', 'img_shape') if key not in samples[0]]
        if missing:
            raise ValueError(f'JpegDecodeDataPreprocessor: the data samples lack {missing}: '
                             'pack with PackInputs(meta_keys=hgkd_mm.datasets.gpu_decode.'
                             'META_KEYS) after LoadJpegCropParams')
        images = self.decode(encoded, [s.get('img_path') for s in samples])
        crops = [crop_resize_flip(image, s.crop_box, s.img_shape, s.flip, self.interpolation)
                 for image, s in zip(images, samples)]
        bgr = torch.stack(crops).flip(1)  # the channel order of mmcv's loaders
        return super().forward(dict(inputs=bgr, data_samples=samples), training)

    def decode(self, encoded: List[torch.Tensor], paths: List[Optional[str]]
               ) -> List[torch.Tensor]:
        """(3, H, W) ``uint8`` RGB images on the model's device: JPEG bytes (1-D) decoded
        in one batch, images decoded in the worker ((3, H, W)) moved."""
        if self._gpu_decode and self.device.type != 'cuda':
            self._fall_back(f'the model is on {self.device}, not on a CUDA device')
        jpegs = [i for i, data in enumerate(encoded) if data.dim() == 1]
        images = [data.to(self.device, non_blocking=self._non_blocking) for data in encoded]
        if not jpegs:
            return images
        batch = [encoded[i] for i in jpegs]
        device = self.device if self._gpu_decode else torch.device('cpu')
        try:
            decoded = decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as error:
            for i in jpegs:  # a file that cannot be decoded anywhere is named
                try:
                    decode_jpeg(encoded[i], mode=ImageReadMode.RGB)
                except RuntimeError as bad:
                    raise OSError(f'cannot decode image {paths[i]}: {bad}') from bad
            if device.type != 'cuda':
                raise
            self._fall_back(f'torchvision could not decode on {device}: {error}')
            decoded = decode_jpeg(batch, mode=ImageReadMode.RGB)
        for i, image in zip(jpegs, decoded):
            images[i] = image.to(self.device, non_blocking=self._non_blocking)
        return images

    def _fall_back(self, reason: str) -> None:
        self._gpu_decode = False
        print_log(f'JpegDecodeDataPreprocessor: {reason}; decoding JPEGs on the CPU in the '
                  'main process, which is slow: on a machine without CUDA use the '
                  "LoadRandomResizedCrop pipeline (configs/pretrain/hgkd_r50.py's default)",
                  logger='current', level=logging.WARNING)
