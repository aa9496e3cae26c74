"""A hook that draws, during training, what the student predicts next to the teacher."""
from __future__ import annotations

from typing import Optional, Sequence, Union

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from ..visualization import (distill_pictures, evaluating, image_paths, load_images,
                             picture_names, seeded_mask)
from .hooks import get_rng_states, set_rng_states


@HOOKS.register_module()
@PRETRAIN_HOOKS.register_module()
class DistillVisualizationHook(Hook):
    """Add the distillation picture of each of ``images`` to the runner's visualizer (its
    backends: local files, TensorBoard, W&B) every ``interval`` training iterations.

    The pictures are those of ``tools/analysis_tools/visualize_distill.py``
    (:mod:`hgkd_mm.visualization.distill`), named ``distill_<file name>``, at the step of the
    iteration just done. Drawing leaves the training as it was: the model runs in eval mode
    without autograd (BatchNorm neither uses nor changes the batch statistics), every
    module's training flag and the global RNG states are restored afterwards, and the masks
    come from ``mask_seed`` (the same masks at every step). The main process draws.

    The configs leave it out; turn it on from the command line (a ``default_hooks`` entry:
    ``--cfg-options`` cannot append to ``custom_hooks``)::

        python tools/train.py CONFIG --cfg-options \
            default_hooks.distill_vis.type=DistillVisualizationHook \
            default_hooks.distill_vis.interval=500 \
            "default_hooks.distill_vis.images=[a.jpg,b.jpg]"

    Args:
        interval (int): draw after every ``interval``-th iteration.
        images (str | list[str]): image files, or folders of images.
        mask_seed (int): seed of the masks.
        img_size (int, optional): the side the images are resized and cropped to, a
            multiple of 32; default: the teacher's ``img_size``.
    """

    priority = 'LOW'  # after LoggerHook: the iteration's scalars are logged first

    def __init__(self, interval: int, images: Union[str, Sequence[str]], mask_seed: int = 0,
                 img_size: Optional[int] = None) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f'DistillVisualizationHook: interval must be an int >= 1, got '
                             f'{interval!r}')
        if img_size is not None and not (isinstance(img_size, int) and img_size > 0
                                         and img_size % 32 == 0):
            raise ValueError(f'DistillVisualizationHook: img_size must be a multiple of 32 (the '
                             f'student stride), got {img_size!r}')
        images = [images] if isinstance(images, str) else list(images)
        if not images:
            raise ValueError('DistillVisualizationHook: images is empty; give image files or '
                             'folders')
        self.interval = interval
        self.paths = image_paths(images)  # a missing image stops the run before training
        self.mask_seed = mask_seed
        self.img_size = img_size
        self.titles = picture_names(self.paths)  # as the tool's, so the pictures compare
        self.names = ['distill_' + title for title in self.titles]
        self._images = self._mask = None

    def before_train(self, runner) -> None:
        if not is_main_process():
            return
        model = _unwrap(runner.model)
        size = self.img_size or model.teacher.img_size
        self._images = load_images(self.paths, size)
        self._mask = seeded_mask(model, len(self.paths), size, self.mask_seed)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval) or not is_main_process():
            return
        model = _unwrap(runner.model)
        states = get_rng_states()
        try:
            with evaluating(model):
                pictures, _ = distill_pictures(model, self._images, self._mask, self.titles)
        finally:
            set_rng_states(states)
        for name, picture in zip(self.names, pictures):
            runner.visualizer.add_image(name, picture, step=runner.iter + 1)


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model
