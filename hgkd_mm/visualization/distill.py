"""What an H-GKD student predicts, next to its teacher's target, as pictures.

One picture per image, five panels: the input; the masked input the student saw; the
teacher's target and the student's prediction at the teacher's grid as RGB (the first three
principal components of the target tokens of all the images drawn together, the prediction
through the same projection and scale, so the colours compare); the per-position cosine
distance between the two, with the masked cells outlined.
"""
from __future__ import annotations

import os
import os.path as osp
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from mmengine.dataset import Compose
from torch import Tensor, nn

from mmpretrain.registry import TRANSFORMS

from ..datasets import transforms  # noqa: F401  registers LoadImageOrRaise
from ..datasets.image_folder import IMAGE_EXTENSIONS
from ..utils import safe_load

MASKED_GREY = 128  # the masked cells in the "masked input" panel
# top of the cosine-distance colour scale: 1 is orthogonal; larger distances share its colour
DISTANCE_MAX = 1.0


def image_paths(items: Sequence[str]) -> List[str]:
    """Image files as given, and the images under folders (sorted). A missing path, or a
    folder without images, is refused by name."""
    paths = []
    for item in items:
        if osp.isfile(item):
            paths.append(item)
        elif osp.isdir(item):
            found = sorted(osp.join(folder, name) for folder, _, names in os.walk(item)
                           for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f'{item}: no images in this folder (files ending in '
                                        f"{', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            raise FileNotFoundError(f'image {item}: no such file or folder')
    return paths


def picture_names(paths: Sequence[str]) -> List[str]:
    """Each file's name without its extension; a name that repeats gets the image's
    position (``_0``, ``_1``, ...)."""
    stems = [osp.splitext(osp.basename(path))[0] for path in paths]
    return [f'{stem}_{i}' if stems.count(stem) > 1 else stem for i, stem in enumerate(stems)]


def load_images(paths: Sequence[str], size: int) -> Tensor:
    """The images as the demo's held-out pipeline sees them: the short edge resized to
    ``size`` (bicubic), the centre ``size x size``. Returns ``(B, 3, size, size)`` uint8 in
    mmcv's BGR order, as the data preprocessors take them."""
    pipeline = Compose([TRANSFORMS.build(step) for step in (
        dict(type='LoadImageOrRaise'),
        dict(type='ResizeEdge', scale=size, edge='short', backend='pillow',
             interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=size),
        dict(type='PackInputs'))])
    return torch.stack([pipeline(dict(img_path=path))['inputs'] for path in paths])


def load_student_checkpoint(model: nn.Module, path: str) -> None:
    """Load an H-GKD checkpoint (``state_dict``: the student, no teacher) into ``model``;
    a checkpoint of another student or decoder (other keys or shapes) is refused by name."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path}: no such file (or give random)')
    checkpoint = safe_load(path)
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f'checkpoint {path}: no state_dict of tensors in it')
    expected = model.state_dict()  # the student's: the teacher's keys are left out
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(f'{k} {tuple(state[k].shape)} here {tuple(expected[k].shape)}'
                      for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        problems = [f'{len(found)} {what} (e.g. {", ".join(found[:3])})' for what, found in (
            ('missing keys', missing), ('unexpected keys', unexpected),
            ('tensors of another shape', reshaped)) if found]
        raise ValueError(f'checkpoint {path} is for another student than the config builds: '
                         + '; '.join(problems))
    model.load_state_dict(state, strict=True)


def seeded_mask(model: nn.Module, batch: int, size: int, seed: int) -> Tensor:
    """``model.mask`` of ``batch`` images of ``size x size``, drawn on the CPU from ``seed``
    (the same masks on every device), the global RNG states left as they were.
    Returns ``(B, size/32, size/32)`` bool, True = visible."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU's only (torch.manual_seed: all)
        return model.mask(torch.empty(batch, 3, size, size))


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside (BatchNorm uses and keeps its running statistics);
    afterwards every module has its own training flag back."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


@dataclass
class DistillViews:
    """The teacher's target and the student's prediction at the teacher's grid.

    ``target``, ``prediction``: ``(B, D, Ht, Wt)`` float32, the head's normalised target
    and its projection of the decoded student features; ``mask``: ``(B, h, w)`` bool, the
    stride-32 cells, True = visible; ``visible``: ``(B, Ht, Wt)`` bool, the mask at the
    teacher's grid; ``loss``: ``(B, Ht, Wt)`` the head's feature loss per position;
    ``distance``: ``(B, Ht, Wt)`` cosine distance ``1 - cos(prediction, target)``.
    """
    target: Tensor
    prediction: Tensor
    mask: Tensor
    visible: Tensor
    loss: Tensor
    distance: Tensor

    def cpu(self) -> 'DistillViews':
        return DistillViews(*(value.cpu() for value in vars(self).values()))

    @staticmethod
    def cat(views: Sequence['DistillViews']) -> 'DistillViews':
        return DistillViews(*(torch.cat(values) for values in
                              zip(*(vars(view).values() for view in views))))

    def means(self, values: Tensor) -> Tuple[Tensor, Tensor]:
        """Per-image means of ``values (B, Ht, Wt)`` on masked and on visible positions
        (NaN where there are none): two ``(B,)``."""
        visible = self.visible.float()
        masked = 1 - visible
        return ((values * masked).sum((1, 2)) / masked.sum((1, 2)),
                (values * visible).sum((1, 2)) / visible.sum((1, 2)))


def distill_views(model: nn.Module, inputs: Tensor, mask: Tensor) -> DistillViews:
    """An ``HGKD`` model's teacher target and student prediction, in the mode the model is
    in (see :func:`evaluating`), from its public parts as its ``loss`` composes them.

    Args:
        inputs: ``(B, 3, H, W)`` normalised images (its data preprocessor's output).
        mask: ``(B, H/32, W/32)`` bool, True = visible, as ``model.mask`` draws it.
    """
    target = model.head.target(model.teacher(inputs, mask))
    features = model.extract_feat(inputs, mask, model.num_visible(*mask.shape[-2:]))
    prediction = model.head.proj(model.neck(features, mask)).float()
    visible = F.interpolate(mask[:, None].float(), size=target.shape[-2:], mode='nearest')
    return DistillViews(
        target=target, prediction=prediction, mask=mask, visible=visible[:, 0].bool(),
        loss=model.head.feature_loss(prediction, target)[:, 0],
        distance=1 - F.cosine_similarity(prediction, target, dim=1))


def pca_rgb(target: Tensor, prediction: Tensor) -> Tuple[Tensor, Tensor]:
    """The target tokens and the prediction as RGB through the targets' first three
    principal components.

    The components are fitted over all target tokens given (float64 SVD; each component's
    sign chosen so that its largest loading is positive, as an SVD's signs are arbitrary).
    Each component is scaled to [0, 1] by the min and max of the targets' projections; the
    prediction goes through the same projection and scale, clipped to [0, 1].

    Args:
        target, prediction: ``(B, D, Ht, Wt)``.

    Returns:
        Two ``(B, Ht, Wt, 3)`` float32 tensors in [0, 1].
    """
    tokens = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    mean = tokens.mean(0)
    components = torch.linalg.svd(tokens - mean, full_matrices=False).Vh[:3]  # (<=3, D)
    largest = components.gather(1, components.abs().argmax(1, keepdim=True))
    components = components * torch.where(largest < 0, -1.0, 1.0).to(components)
    components = F.pad(components, (0, 0, 0, 3 - len(components)))  # fewer tokens than 3

    def project(grid: Tensor) -> Tensor:
        return (grid.permute(0, 2, 3, 1).double() - mean) @ components.T  # (B, Ht, Wt, 3)

    target_pcs, prediction_pcs = project(target), project(prediction)
    low = target_pcs.flatten(0, 2).amin(0)
    span = (target_pcs.flatten(0, 2).amax(0) - low).clamp_min(1e-12)
    return tuple(((pcs - low) / span).clamp(0, 1).float()
                 for pcs in (target_pcs, prediction_pcs))


def draw_picture(image: np.ndarray, views: DistillViews, index: int, target_rgb: Tensor,
                 prediction_rgb: Tensor, title: str) -> np.ndarray:
    """The five panels of image ``index`` of ``views`` as an ``(h, w, 3)`` uint8 RGB array.

    Args:
        image: ``(H, W, 3)`` uint8 RGB, the model's input.
        target_rgb, prediction_rgb: ``(Ht, Wt, 3)`` from :func:`pca_rgb`.
    """
    height, width = image.shape[:2]
    mask = views.mask[index].numpy()
    cell_h, cell_w = height // mask.shape[0], width // mask.shape[1]
    hidden = ~mask.repeat(cell_h, 0).repeat(cell_w, 1)
    masked_image = np.where(hidden[..., None], np.uint8(MASKED_GREY), image)
    masked_loss, visible_loss = (float(v[index]) for v in views.means(views.loss))

    # a fixed layout: matplotlib's constrained layout took most of the drawing time
    figure = Figure(figsize=(15, 3.5), dpi=100)
    axes = figure.subplots(1, 5, gridspec_kw=dict(left=0.005, right=0.955, bottom=0.02,
                                                  top=0.84, wspace=0.06))
    extent = (0, width, height, 0)  # the teacher grid drawn over the image's pixels
    panels = ((image, 'input'),
              (masked_image, f'masked input ({mask.sum()}/{mask.size} cells visible)'),
              (target_rgb.numpy(), 'teacher target (PCA 1-3)'),
              (prediction_rgb.numpy(), 'student prediction (same PCA)'))
    for ax, (picture, name) in zip(axes, panels):
        ax.imshow(picture, extent=extent, interpolation='nearest')
        ax.set_title(name, fontsize=10)
    heat = axes[4].imshow(views.distance[index].numpy(), extent=extent, cmap='magma',
                          vmin=0, vmax=DISTANCE_MAX, interpolation='nearest')
    for row, col in zip(*np.nonzero(~mask)):
        axes[4].add_patch(Rectangle((col * cell_w, row * cell_h), cell_w, cell_h, fill=False,
                                    edgecolor='cyan', linewidth=1.5))
    axes[4].set_title('cosine distance (masked outlined)', fontsize=10)
    figure.colorbar(heat, cax=figure.add_axes((0.962, 0.1, 0.008, 0.66)), extend='max')
    for ax in axes:
        ax.set_axis_off()
    figure.suptitle(f'{title}    loss: masked {masked_loss:.4f}, visible {visible_loss:.4f}',
                    fontsize=11)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def distill_pictures(model: nn.Module, images: Tensor, mask: Tensor, names: Sequence[str],
                     batch_size: int = 16) -> Tuple[List[np.ndarray], List[Dict[str, float]]]:
    """The pictures of ``images`` and each one's mean loss on masked and visible positions.

    The model runs in the mode it is in (see :func:`evaluating`), ``batch_size`` images at a
    time; the principal components are fitted over all the images.

    Args:
        images: ``(B, 3, H, W)`` uint8 BGR, as :func:`load_images` returns.
        mask: ``(B, H/32, W/32)`` bool, True = visible.
        names: a title per image.

    Returns:
        An ``(h, w, 3)`` uint8 RGB picture per image, and per image
        ``dict(loss_masked=..., loss_visible=...)`` (the head's feature loss).
    """
    chunks = []
    for start in range(0, len(images), batch_size):
        data = dict(inputs=images[start:start + batch_size], data_samples=None)
        inputs = model.data_preprocessor(data, False)['inputs']
        chunks.append(distill_views(
            model, inputs, mask[start:start + batch_size].to(inputs.device)).cpu())
    views = DistillViews.cat(chunks)
    target_rgb, prediction_rgb = pca_rgb(views.target, views.prediction)
    rgb_images = images.flip(1).permute(0, 2, 3, 1).numpy()  # BGR (B, 3, H, W) -> RGB HWC
    pictures = [draw_picture(rgb_images[i], views, i, target_rgb[i], prediction_rgb[i], name)
                for i, name in enumerate(names)]
    masked, visible = views.means(views.loss)
    losses = [dict(loss_masked=float(m), loss_visible=float(v))
              for m, v in zip(masked, visible)]
    return pictures, losses
