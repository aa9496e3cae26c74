"""Linear probe and short fine-tune of a pre-trained backbone on labelled images.

The library behind ``tools/analysis_tools/probe.py`` and ``compare_pretraining.py``.

Images: short side resized to ``img_size``, centre crop, ImageNet mean/std.
Features: ResNet = global average pool of the last stage (eval-mode BN);
ViT = mean of the patch tokens after the final norm (the cls token is not used).

- linear: the frozen backbone's features are extracted once (cached in memory across
  seeds, and in ``cache_dir`` across runs), standardised with the training part's
  statistics, and a multinomial logistic regression is fitted with full-batch L-BFGS.
  Its L2 weight decay is picked from ``WEIGHT_DECAYS`` on a stratified 20% validation
  part of the training part (drawn with the seed; one warm-started path from strong to
  weak decay, at most 50 L-BFGS iterations each), then the head is refitted on all of
  the training part.
- finetune: backbone + linear head trained end to end (AdamW, cosine with warm-up,
  random-resized-crop + flip, label smoothing 0.1); the seed draws the head's init, the
  data order and the augmentation.

A data set is an image folder (one folder per class) or an mmpretrain ``CustomDataset``
ann file (``<path> <label>`` lines, paths relative to ``data_root``), e.g. the fixed
caltech101 split of :mod:`hgkd_mm.evaluation.splits`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from hgkd_mm.datasets.image_folder import IMAGE_EXTENSIONS
from hgkd_mm.utils.checkpoint_io import safe_load

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)
VAL_FRACTION = 0.2
CACHE_VERSION = 1
StateDict = Dict[str, Tensor]


# ----------------------------------------------------------------------------- data
@dataclass
class ImageFolder:
    """An image-folder data set: ``paths[i]`` has label ``labels[i]`` (index into classes)."""
    root: str
    paths: List[str]
    labels: np.ndarray
    classes: List[str]


def scan_image_folder(root: str, classes: Optional[Sequence[str]] = None) -> ImageFolder:
    """Every image of ``root/<class>/``, sorted; ``classes`` fixes the label order."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'image folder not found: {root}')
    found = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    if classes is None:
        classes = found
    elif sorted(classes) != found:
        raise ValueError(f'{root} must have the class folders of the training data; '
                         f'missing {sorted(set(classes) - set(found))}, '
                         f'extra {sorted(set(found) - set(classes))}')
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(osp.join(root, name))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [osp.join(root, name, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f'no images under {root}/<class>/')
    return ImageFolder(osp.abspath(root), paths, np.array(labels, dtype=np.int64), list(classes))


def scan_ann_file(path: str, data_root: str,
                  classes: Optional[Sequence[str]] = None) -> ImageFolder:
    """The images of an ann file (``<path> <label>`` lines, relative to ``data_root``).

    ``classes`` (another ann file's) must cover every label of this one.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'ann file not found: {path}')
    with open(path) as f:
        rows = [line.rsplit(' ', 1) for line in f.read().splitlines() if line.strip()]
    if not rows or any(len(row) != 2 or not row[1].isdigit() for row in rows):
        raise ValueError(f'{path}: expected "<path> <label>" lines')
    labels = np.array([int(label) for _, label in rows], dtype=np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    elif labels.max() >= len(classes):
        raise ValueError(f'{path} has label {labels.max()}; the training data has '
                         f'{len(classes)} classes')
    paths = [osp.join(data_root, p) for p, _ in rows]
    return ImageFolder(osp.abspath(path), paths, labels, list(classes))


def scan_labelled(source: str, data_root: Optional[str] = None,
                  classes: Optional[Sequence[str]] = None) -> ImageFolder:
    """An image folder, or an ann file (``.txt``) whose paths are relative to
    ``data_root`` (default: the ann file's folder)."""
    if source.endswith('.txt'):
        return scan_ann_file(source, data_root or osp.dirname(source), classes)
    return scan_image_folder(source, classes)


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` indices; ``fraction`` of every class (at least one image of a
    class with two or more, never its last one) is held out."""
    rng = np.random.RandomState(seed)
    kept, held_out = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = len(members)
        n_out = min(count - 1, max(1, round(count * fraction))) if count > 1 else 0
        held_out += members[:n_out].tolist()
        kept += members[n_out:].tolist()
    return np.sort(kept), np.sort(held_out)


def load_image(path: str, size: int) -> np.ndarray:
    """``(3, size, size)`` uint8: short side resized to ``size``, centre crop."""
    with Image.open(path) as img:
        img.draft('RGB', (size, size))  # JPEG: decode at a reduced scale when possible
        img = img.convert('RGB')
        scale = size / min(img.size)
        width, height = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((width, height), Image.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _digest(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_images(paths: Sequence[str], size: int, cache_dir: Optional[str] = None) -> Tensor:
    """``(N, 3, size, size)`` uint8 images, cached as ``.npy`` in ``cache_dir``."""
    cache = None
    if cache_dir:
        stats = [(osp.abspath(p), os.stat(p).st_size) for p in paths]
        cache = osp.join(cache_dir, f'images-{size}px-{_digest(CACHE_VERSION, stats)}.npy')
        if osp.isfile(cache):
            return torch.from_numpy(np.load(cache, allow_pickle=False))
    images = np.stack([load_image(p, size) for p in paths])
    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        np.save(cache + '.tmp.npy', images)
        os.replace(cache + '.tmp.npy', cache)
    return torch.from_numpy(images)


def normalize(images: Tensor) -> Tensor:
    """uint8 ``(B, 3, H, W)`` -> float, ImageNet mean/std (RGB)."""
    mean = images.new_tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() - mean) / std


# ------------------------------------------------------------------------- backbones
class PooledBackbone(nn.Module):
    """A backbone returning one pooled feature vector per image.

    Forward: ``(B, 3, H, W)`` normalised images -> ``(B, feature_dim)``: the spatial mean
    of the backbone's last output grid ``(B, C, h, w)`` (ResNet: last stage; ViT: patch
    tokens after the final norm).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, kind: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.kind = kind

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)[-1].mean(dim=(2, 3))


def read_state_dict(path: str) -> StateDict:
    """The model state dict of an mmengine checkpoint (``state_dict``/``model``) or a
    bare one, loaded with ``weights_only=True``."""
    checkpoint = safe_load(path)
    for container in ('state_dict', 'model'):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(container), dict):
            return checkpoint[container]
    return checkpoint


def resnet_keys(state_dict: StateDict) -> StateDict:
    """mmpretrain ``ResNet`` keys from ``backbone.``-prefixed keys, or from a
    torchvision/timm state dict (same names as mmpretrain's, plus the ``fc.`` classifier)."""
    if any(k.startswith('backbone.') for k in state_dict):
        return {k[len('backbone.'):]: v for k, v in state_dict.items()
                if k.startswith('backbone.')}
    return {k: v for k, v in state_dict.items() if not k.startswith('fc.')}


def load_strict(module: nn.Module, state_dict: StateDict, path: str) -> None:
    """``module.load_state_dict(strict=True)`` with the key lists in the error."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & state_dict.keys()
                        if expected[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f'{path} does not match the backbone {type(module).__name__} (check --arch): '
            f'missing {missing[:10]} ({len(missing)}), unexpected {unexpected[:10]} '
            f'({len(unexpected)}), shape mismatches {mismatched[:10]}')
    module.load_state_dict(state_dict, strict=True)


def parse_vit_arch(spec: str) -> dict:
    """``VisionTransformer`` kwargs (arch, img_size, patch_size) from ``--arch vit:SPEC``.

    ``SPEC`` is an mmpretrain config whose ``model.backbone`` is the ViT (e.g. the MAE
    pre-training config), a JSON dict (``{"arch": ..., "img_size": ..., "patch_size":
    ...}`` or the arch dict itself) or an arch name such as ``base``.
    """
    if spec.endswith('.py'):
        from mmengine.config import Config
        backbone = Config.fromfile(spec).model.backbone
        return dict(arch=backbone.get('arch', 'base'), img_size=backbone.get('img_size', 224),
                    patch_size=backbone.get('patch_size', 16))
    if spec.lstrip().startswith('{'):
        options = json.loads(spec)
        if 'arch' not in options:
            options = dict(arch=options)
        return dict(dict(img_size=224, patch_size=16), **options)
    return dict(arch=spec, img_size=224, patch_size=16)


def init_weights_quietly(module: nn.Module) -> None:
    """``module.init_weights()`` without mmengine's log line per parameter."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        module.init_weights()
    finally:
        logger.setLevel(level)


def build_backbone(arch: str, checkpoint: str) -> PooledBackbone:
    """A ``PooledBackbone`` for ``--arch``, with ``checkpoint``'s weights (or random)."""
    from mmpretrain.models.backbones import ResNet, VisionTransformer
    if arch.startswith('resnet'):
        backbone = ResNet(depth=int(arch[len('resnet'):]), out_indices=(3, ))
        feature_dim, kind = backbone.feat_dim, 'resnet'
        if checkpoint == 'random':
            init_weights_quietly(backbone)
        else:
            load_strict(backbone, resnet_keys(read_state_dict(checkpoint)), checkpoint)
    elif arch.startswith('vit:'):
        from hgkd_mm.models.teachers import load_teacher_checkpoint
        # the same VisionTransformer options as the H-GKD teacher
        backbone = VisionTransformer(**parse_vit_arch(arch[len('vit:'):]), out_type='featmap',
                                     final_norm=True, with_cls_token=True)
        feature_dim, kind = backbone.embed_dims, 'vit'
        if checkpoint == 'random':
            init_weights_quietly(backbone)
        else:
            load_strict(backbone, load_teacher_checkpoint(checkpoint)[0], checkpoint)
    else:
        raise ValueError(f'--arch must be resnetN or vit:SPEC, got {arch!r}')
    return PooledBackbone(backbone, feature_dim, kind)


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


@torch.no_grad()
def extract_features(model: nn.Module, images: Tensor, batch_size: int = 64,
                     device: str = 'cpu') -> Tensor:
    """``(N, D)`` float32 CPU features of uint8 ``images`` ``(N, 3, S, S)``, eval mode."""
    model.eval().to(device)
    return torch.cat([model(normalize(images[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(images), batch_size)])


def checkpoint_id(checkpoint: str) -> object:
    """What identifies a checkpoint's weights in a cache key."""
    if checkpoint == 'random':
        return 'random'  # deterministic: the caller seeds torch before building
    stat = os.stat(checkpoint)
    return [osp.abspath(checkpoint), stat.st_size, stat.st_mtime_ns]


def cached_features(checkpoint: str, arch: str, images: Tensor, paths: Sequence[str],
                    cache_dir: Optional[str], batch_size: int = 64,
                    device: str = 'cpu') -> Tensor:
    """Features of ``images`` (:func:`extract_features`), cached in ``cache_dir`` by
    checkpoint (path, size, mtime), arch, image size and image list."""
    cache = None
    if cache_dir:
        key = _digest(CACHE_VERSION, checkpoint_id(checkpoint), arch, list(images.shape),
                      [osp.abspath(p) for p in paths])
        cache = osp.join(cache_dir, f'features-{key}.pt')
        if osp.isfile(cache):
            return torch.load(cache, map_location='cpu', weights_only=True)
    torch.manual_seed(0)
    features = extract_features(build_backbone(arch, checkpoint), images, batch_size, device)
    if cache:
        os.makedirs(cache_dir, exist_ok=True)
        torch.save(features, cache + '.tmp')
        os.replace(cache + '.tmp', cache)
    return features


# ------------------------------------------------------------------------- linear probe
def fit_linear_head(features: Tensor, labels: Tensor, num_classes: int, weight_decay: float,
                    init: Optional[nn.Linear] = None, max_iter: int = 50) -> nn.Linear:
    """Multinomial logistic regression (cross-entropy + ``weight_decay/2 * |W|^2``) on
    ``(N, D)`` features, full-batch L-BFGS from ``init``'s weights (default zeros)."""
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(init.weight if init is not None else torch.zeros_like(head.weight))
        head.bias.copy_(init.bias if init is not None else torch.zeros_like(head.bias))
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-5, tolerance_change=1e-7,
                                  line_search_fn='strong_wolfe')

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), labels) + \
            0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return head


def standardize(train: Tensor, *others: Tensor) -> Tuple[Tensor, ...]:
    """Zero mean, unit variance per feature, with ``train``'s statistics."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return tuple((x - mean) / std for x in (train, *others))


def accuracy(head: nn.Module, features: Tensor, labels: Tensor) -> float:
    """Top-1 in %."""
    with torch.no_grad():
        return 100.0 * (head(features).argmax(1) == labels).float().mean().item()


def linear_probe(features: Tensor, labels: Tensor, train_idx: np.ndarray,
                 test_idx: np.ndarray, seed: int) -> dict:
    """Top-1 (%) of a logistic regression whose weight decay is picked on a validation
    part of ``train_idx``, refitted on all of ``train_idx``, tested on ``test_idx``."""
    num_classes = int(labels.max()) + 1
    fit_idx, val_idx = stratified_split(labels[train_idx].numpy(), VAL_FRACTION, seed)
    if not len(val_idx):  # accuracy would be NaN for every weight decay
        raise ValueError(f'the {len(train_idx)} training images have too few per class (a '
                         'class needs 2) to hold out a part for picking the weight decay: '
                         'use more images per class (--data) or a smaller --split')
    fit_idx, val_idx = train_idx[fit_idx], train_idx[val_idx]
    fit_x, val_x = standardize(features[fit_idx], features[val_idx])
    heads, val_top1 = {}, {}
    head = None
    for wd in sorted(WEIGHT_DECAYS, reverse=True):  # warm start: strong to weak decay
        head = heads[wd] = fit_linear_head(fit_x, labels[fit_idx], num_classes, wd, head)
        val_top1[wd] = accuracy(head, val_x, labels[val_idx])
    best_wd = max(WEIGHT_DECAYS, key=lambda wd: (val_top1[wd], wd))  # ties: stronger decay
    train_x, test_x = standardize(features[train_idx], features[test_idx])
    head = fit_linear_head(train_x, labels[train_idx], num_classes, best_wd, heads[best_wd])
    return dict(top1=accuracy(head, test_x, labels[test_idx]), weight_decay=best_wd,
                val_top1={str(k): v for k, v in sorted(val_top1.items())})


# ---------------------------------------------------------------------------- fine-tune
def random_resized_crop(images: Tensor, generator: torch.Generator,
                        scale: Tuple[float, float] = (0.35, 1.0)) -> Tensor:
    """Per image: a random crop (area ``scale``, aspect 3/4..4/3) resized back to the
    input size, and a random horizontal flip. ``(B, 3, S, S)`` float -> same shape."""
    size = images.shape[-1]
    out = []
    for image in images:
        area = size * size * torch.empty(1).uniform_(*scale, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3),
                                                  generator=generator).item())
        width = min(size, round(math.sqrt(area * aspect)))
        height = min(size, round(math.sqrt(area / aspect)))
        top = int(torch.randint(size - height + 1, (1, ), generator=generator))
        left = int(torch.randint(size - width + 1, (1, ), generator=generator))
        crop = image[None, :, top:top + height, left:left + width]
        crop = F.interpolate(crop, size=(size, size), mode='bilinear', align_corners=False)
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out)


def finetune(arch: str, checkpoint: str, images: Tensor, labels: Tensor,
             train_idx: np.ndarray, test_idx: np.ndarray, seed: int, epochs: int,
             lr: float = 1e-3, batch_size: int = 64, device: str = 'cpu') -> dict:
    """Top-1 (%) on ``test_idx`` after training backbone + linear head on ``train_idx``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    backbone = build_backbone(arch, checkpoint)
    model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, int(labels.max()) + 1))
    model.to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([dict(params=decay, weight_decay=0.05),
                                   dict(params=no_decay, weight_decay=0.0)], lr=lr)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total, warmup = epochs * steps_per_epoch, max(1, steps_per_epoch // 2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup,
                                    0.5 * (1 + math.cos(math.pi * step / total))))
    train_idx = torch.as_tensor(train_idx)
    for _ in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:
                continue  # BatchNorm needs two samples
            inputs = random_resized_crop(normalize(images[batch]), generator).to(device)
            loss = F.cross_entropy(model(inputs), labels[batch].to(device), label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    test_idx = torch.as_tensor(test_idx)
    logits = extract_features(model, images[test_idx], batch_size, device)
    top1 = 100.0 * (logits.argmax(1) == labels[test_idx]).float().mean().item()
    return dict(top1=top1, epochs=epochs, lr=lr)


# ------------------------------------------------------------------------------- driver
def evaluate(checkpoint: str, data: str, arch: str = 'resnet18', img_size: int = 128,
             mode: str = 'linear', test_dir: Optional[str] = None, split: float = 0.2,
             seeds: Sequence[int] = (0, ), epochs: int = 5, lr: float = 1e-3,
             cache_dir: Optional[str] = None, batch_size: int = 64,
             device: Optional[str] = None, data_root: Optional[str] = None) -> dict:
    """Probe ``checkpoint`` on ``data``; one result per seed, and their mean and std.

    ``mode`` is ``'linear'`` or ``'finetune'``; see the module docstring. ``data`` and
    ``test_dir`` are image folders or ann files (paths relative to ``data_root``).
    """
    if mode not in ('linear', 'finetune'):
        raise ValueError(f"mode must be 'linear' or 'finetune', got {mode!r}")
    if checkpoint != 'random' and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    device = device or default_device()
    start = time.time()
    train_set = scan_labelled(data, data_root)
    paths, labels = list(train_set.paths), train_set.labels
    if test_dir:
        test_set = scan_labelled(test_dir, data_root, train_set.classes)
        fixed_test = np.arange(len(paths), len(paths) + len(test_set.paths))
        paths += test_set.paths
        labels = np.concatenate([labels, test_set.labels])
    images = load_images(paths, img_size, cache_dir)
    labels = torch.from_numpy(labels)
    load_s = time.time() - start
    features = (cached_features(checkpoint, arch, images, paths, cache_dir, batch_size, device)
                if mode == 'linear' else None)
    features_s = time.time() - start - load_s

    runs = []
    for seed in seeds:
        if test_dir:
            train_idx, test_idx = np.arange(len(train_set.paths)), fixed_test
        else:
            train_idx, test_idx = stratified_split(labels.numpy(), split, seed)
        if not len(test_idx):
            raise ValueError(f'--split {split} leaves no test image of the {len(labels)} '
                             'images (a class needs 2 to lend one): use more images per '
                             'class (--data) or a test folder')
        if mode == 'linear':
            run = linear_probe(features, labels, train_idx, test_idx, seed)
        else:
            run = finetune(arch, checkpoint, images, labels, train_idx, test_idx, seed,
                           epochs, lr, batch_size, device)
        runs.append(dict(seed=seed, num_train=len(train_idx), num_test=len(test_idx), **run))
    top1 = np.array([run['top1'] for run in runs])
    return dict(
        checkpoint=checkpoint, arch=arch, mode=mode, data=train_set.root,
        test_dir=osp.abspath(test_dir) if test_dir else None, img_size=img_size,
        split=None if test_dir else split, num_classes=len(train_set.classes),
        num_images=len(paths), chance_top1=100.0 / len(train_set.classes),
        feature=('mean of patch tokens after the final norm' if arch.startswith('vit:')
                 else 'global average pool of the last stage'),
        seeds=list(seeds), runs=runs, top1_mean=float(top1.mean()),
        top1_std=float(top1.std(ddof=1)) if len(top1) > 1 else 0.0,
        seconds=dict(images=round(load_s, 1), features=round(features_s, 1),
                     total=round(time.time() - start, 1)))


def format_table(results: Sequence[dict], names: Optional[Sequence[str]] = None) -> str:
    """A markdown table: one row per result, top-1 per seed and mean ± std."""
    names = names or [osp.basename(r['checkpoint']) for r in results]
    seeds = results[0]['seeds'] if results else []
    header = ['model', 'mode', 'img', *[f'seed {s}' for s in seeds], 'top-1 mean ± std']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for name, result in zip(names, results):
        cells = [name, result['mode'], str(result['img_size']),
                 *[f"{run['top1']:.2f}" for run in result['runs']],
                 f"{result['top1_mean']:.2f} ± {result['top1_std']:.2f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
