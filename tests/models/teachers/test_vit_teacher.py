"""FrozenViTTeacher and its checkpoint loading, checked against timm's ViT.

The reference for every numerical check is timm's ``VisionTransformer`` and ``Block``
(MAE's official code builds its encoder and decoder from them), with random weights.
"""
import pickle
from functools import partial
from typing import Dict

import numpy as np
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import HistoryBuffer
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import Block
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import Tensor, nn

from hgkd_mm.models.teachers import FrozenViTTeacher, load_teacher_checkpoint, safe_load
from hgkd_mm.models.teachers.vit_teacher import PatchProjection
from masks import random_mask

IMG, PATCH, EMBED, DEPTH, HEADS = 64, 16, 64, 2, 4
GRID = IMG // PATCH  # teacher grid 4 x 4; the stride-32 mask grid is 2 x 2
ARCH = dict(embed_dims=EMBED, num_layers=DEPTH, num_heads=HEADS, feedforward_channels=4 * EMBED)
DECODER_EMBED, DECODER_HEADS = 32, 4
TOL = dict(atol=1e-5, rtol=1e-5)


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    """Move every weight off its init (LayerNorm 1/0, zero tokens) so that a wrong key
    mapping changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return module.eval()


class TimmMAEDecoder(nn.Module):
    """MAE's decoder under its official parameter names, built from timm blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(EMBED, DECODER_EMBED)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DECODER_EMBED))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, GRID * GRID + 1, DECODER_EMBED))
        self.decoder_blocks = nn.ModuleList(
            [Block(DECODER_EMBED, DECODER_HEADS, mlp_ratio=4, qkv_bias=True,
                   norm_layer=partial(nn.LayerNorm, eps=1e-6)) for _ in range(2)])
        self.decoder_norm = nn.LayerNorm(DECODER_EMBED, eps=1e-6)
        self.decoder_pred = nn.Linear(DECODER_EMBED, PATCH * PATCH * 3)


@pytest.fixture(scope='module')
def timm_vit() -> TimmViT:
    torch.manual_seed(0)
    vit = TimmViT(img_size=IMG, patch_size=PATCH, embed_dim=EMBED, depth=DEPTH,
                  num_heads=HEADS, mlp_ratio=4, qkv_bias=True, num_classes=10)
    return _perturb(vit, seed=1)


@pytest.fixture(scope='module')
def timm_decoder() -> TimmMAEDecoder:
    torch.manual_seed(0)
    return _perturb(TimmMAEDecoder(), seed=2)


@pytest.fixture(scope='module')
def images() -> Tensor:
    return torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope='module')
def files(tmp_path_factory, timm_vit, timm_decoder) -> Dict[str, str]:
    """The same weights as a timm state dict, an official MAE file (with decoder) and an
    mmpretrain zoo file (with ``neck.``), the latter written from the loaded teacher."""
    folder = tmp_path_factory.mktemp('teacher_ckpt')
    paths = {name: str(folder / f'{name}.pth') for name in ('timm', 'mae', 'zoo')}
    torch.save(timm_vit.state_dict(), paths['timm'])
    torch.save({'model': {**timm_vit.state_dict(), **timm_decoder.state_dict()}}, paths['mae'])

    teacher = FrozenViTTeacher(ARCH, img_size=IMG, patch_size=PATCH, input_mode='masked',
                               checkpoint=paths['mae'], decoder_num_heads=DECODER_HEADS)
    state_dict = {f'backbone.{k}': v for k, v in teacher.vit.state_dict().items()}
    state_dict.update({f'neck.{k}': v for k, v in teacher.decoder.state_dict().items()})
    state_dict['data_preprocessor.mean'] = torch.zeros(3)
    meta = dict(epoch=np.int64(1600), lr=np.float64(1.5e-4), history=np.arange(3.0),
                cfg=ConfigDict(model=dict(type='MAE')))
    torch.save({'state_dict': state_dict, 'meta': meta}, paths['zoo'])
    return paths


def _teacher(path=None, **kwargs) -> FrozenViTTeacher:
    kwargs.setdefault('decoder_num_heads', DECODER_HEADS)
    return FrozenViTTeacher(ARCH, img_size=IMG, patch_size=PATCH, checkpoint=path, **kwargs)


def _timm_grid(tokens: Tensor) -> Tensor:
    """timm ``(B, N, D)`` patch tokens -> ``(B, D, Ht, Wt)``."""
    return tokens.transpose(1, 2).reshape(len(tokens), -1, GRID, GRID)


@torch.no_grad()
def _mae_reference(vit: TimmViT, decoder: TimmMAEDecoder, images: Tensor,
                   visible: Tensor) -> Dict[str, Tensor]:
    """MAE's forward_encoder / forward_decoder, one sample at a time, with timm modules.

    Returns the encoder's patch tokens at visible positions (zeros elsewhere) and the
    decoder's hidden features after its norm, both as (B, D, Ht, Wt) grids.
    """
    encoder_grids, decoder_grids = [], []
    for image, keep in zip(images, visible):
        tokens = vit.patch_embed(image[None]) + vit.pos_embed[:, 1:]
        tokens = torch.cat([vit.cls_token + vit.pos_embed[:, :1], tokens[:, keep]], 1)
        tokens = vit.norm(vit.blocks(tokens))
        encoder_full = torch.zeros(1, GRID * GRID, EMBED)
        encoder_full[:, keep] = tokens[:, 1:]
        encoder_grids.append(_timm_grid(encoder_full))

        tokens = decoder.decoder_embed(tokens)
        patches = decoder.mask_token.repeat(1, GRID * GRID, 1)
        patches[:, keep] = tokens[:, 1:]
        tokens = torch.cat([tokens[:, :1], patches], 1) + decoder.decoder_pos_embed
        for block in decoder.decoder_blocks:
            tokens = block(tokens)
        decoder_grids.append(_timm_grid(decoder.decoder_norm(tokens)[:, 1:]))
    return dict(encoder=torch.cat(encoder_grids), decoder=torch.cat(decoder_grids))


def _patch_visibility(mask: Tensor) -> Tensor:
    return mask.repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)


def test_full_mode_matches_timm(files, timm_vit, images):
    teacher = _teacher(files['timm'])
    (grid, ) = teacher(images)
    expected = _timm_grid(timm_vit.forward_features(images)[:, 1:])
    assert grid.shape == (2, EMBED, GRID, GRID)
    torch.testing.assert_close(grid, expected, **TOL)


@pytest.mark.parametrize('drop_path_rate', [0.0, 0.1])
def test_full_mode_compiles_in_one_graph(files, images, drop_path_rate):
    """mmpretrain gives each block its drop-path rate as a numpy float, on which
    torch.compile cannot branch (a graph break in every block): the teacher makes them
    Python floats, and its forward compiles whole (fullgraph) to the same tokens."""
    teacher = _teacher(files['timm'], drop_path_rate=drop_path_rate)
    rates = [m.drop_prob for m in teacher.modules() if hasattr(m, 'drop_prob')]
    assert rates and all(type(rate) is float for rate in rates)
    assert max(rates) == pytest.approx(drop_path_rate)
    compiled = torch.compile(teacher.forward, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(images)[0], teacher(images)[0], atol=0, rtol=0)


def test_three_formats_give_identical_tokens(files, images):
    grids = {name: _teacher(path)(images)[0] for name, path in files.items()}
    torch.testing.assert_close(grids['mae'], grids['timm'], atol=0, rtol=0)
    torch.testing.assert_close(grids['zoo'], grids['timm'], atol=0, rtol=0)

    mask = random_mask(2, 2, 2, keep=2, seed=4)
    masked = {name: _teacher(files[name], input_mode='masked')(images, mask)[0]
              for name in ('mae', 'zoo')}
    torch.testing.assert_close(masked['zoo'], masked['mae'], atol=0, rtol=0)


def test_load_teacher_checkpoint_formats(files):
    timm_encoder, no_decoder = load_teacher_checkpoint(files['timm'])
    zoo_encoder, zoo_decoder = load_teacher_checkpoint(files['zoo'])
    mae_encoder, mae_decoder = load_teacher_checkpoint(files['mae'])
    assert no_decoder is None
    assert 'layers.1.ffn.layers.0.0.weight' in timm_encoder and 'head.weight' not in timm_encoder
    assert timm_encoder.keys() == zoo_encoder.keys() == mae_encoder.keys()
    assert zoo_decoder.keys() == mae_decoder.keys()
    assert 'decoder_blocks.1.ffn.layers.1.bias' in mae_decoder and 'ln1.weight' in mae_decoder


def test_masked_mode_with_decoder_matches_mae(files, timm_vit, timm_decoder, images):
    teacher = _teacher(files['mae'], input_mode='masked')
    assert teacher.embed_dims == DECODER_EMBED
    mask = random_mask(2, 2, 2, keep=2, seed=5)
    (grid, ) = teacher(images, mask)
    assert grid.shape == (2, DECODER_EMBED, GRID, GRID)
    reference = _mae_reference(timm_vit, timm_decoder, images, _patch_visibility(mask))
    torch.testing.assert_close(grid, reference['decoder'], **TOL)


def test_masked_mode_without_decoder(files, timm_vit, timm_decoder, images):
    teacher = _teacher(files['timm'], input_mode='masked')
    assert teacher.decoder is None and teacher.embed_dims == EMBED
    all_visible = torch.ones(2, 2, 2, dtype=torch.bool)
    torch.testing.assert_close(teacher(images, all_visible)[0], _teacher(files['timm'])(images)[0],
                               **TOL)

    mask = random_mask(2, 2, 2, keep=2, seed=6)
    (grid, ) = teacher(images, mask)
    reference = _mae_reference(timm_vit, timm_decoder, images, _patch_visibility(mask))
    torch.testing.assert_close(grid, reference['encoder'], **TOL)


def test_intermediate_out_layers(files, timm_vit, images):
    teacher = _teacher(files['timm'], out_layers=(0, -1))
    first, last = teacher(images)
    tokens = timm_vit.patch_embed(images)
    tokens = torch.cat([timm_vit.cls_token.expand(2, -1, -1), tokens], 1) + timm_vit.pos_embed
    expected_first = timm_vit.blocks[0](tokens)[:, 1:]  # no final norm on inner blocks
    torch.testing.assert_close(first, _timm_grid(expected_first), **TOL)
    torch.testing.assert_close(last, _timm_grid(timm_vit.forward_features(images)[:, 1:]),
                               **TOL)


def test_teacher_stays_frozen(files, images):
    teacher = MODELS.build(dict(type='FrozenViTTeacher', arch=ARCH, img_size=IMG,
                                patch_size=PATCH, checkpoint=files['timm']))
    parent = nn.Sequential(teacher)
    parent.train()
    assert not any(module.training for module in teacher.modules())
    assert not any(param.requires_grad for param in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.init_weights()  # what a Runner does to the whole model
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    (grid, ) = teacher(images.requires_grad_())
    assert grid.grad_fn is None and not grid.requires_grad


def test_wrong_architecture_lists_keys(files):
    bigger = dict(ARCH, num_layers=DEPTH + 1, embed_dims=2 * EMBED)
    with pytest.raises(RuntimeError) as error:
        FrozenViTTeacher(bigger, img_size=IMG, patch_size=PATCH, checkpoint=files['timm'])
    message = str(error.value)
    assert files['timm'] in message
    assert 'missing keys' in message and 'layers.2.ln1.weight' in message
    assert 'shape mismatches' in message and 'cls_token' in message

    smaller = dict(ARCH, num_layers=DEPTH - 1)
    with pytest.raises(RuntimeError, match=r'unexpected keys.*layers\.1\.ln1\.weight'):
        FrozenViTTeacher(smaller, img_size=IMG, patch_size=PATCH, checkpoint=files['zoo'])


def test_missing_file_and_bad_options(tmp_path, files):
    missing = str(tmp_path / 'nowhere.pth')
    with pytest.raises(FileNotFoundError, match='nowhere.pth.*teacher.checkpoint'):
        _teacher(missing)
    with pytest.raises(ValueError, match='input_mode'):
        _teacher(input_mode='partial')
    with pytest.raises(ValueError, match='out_layers'):
        _teacher(out_layers=(DEPTH, ))
    with pytest.raises(ValueError, match='out_layers'):
        _teacher(files['mae'], input_mode='masked', out_layers=(0, 1))
    with pytest.raises(ValueError, match='visible patches'):
        uneven = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
        _teacher(input_mode='masked')(torch.zeros(2, 3, IMG, IMG), uneven)


def test_safe_load_reads_an_mmengine_runner_checkpoint(tmp_path):
    """A checkpoint written by mmengine's Runner holds HistoryBuffers and numpy values."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class ToyModel(BaseModel):

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, inputs, mode='loss'):
            return dict(loss=self.linear(inputs).pow(2).mean())

    dataset = [dict(inputs=torch.randn(4)) for _ in range(4)]
    runner = Runner(
        model=ToyModel(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dataset, batch_size=2,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        cfg=dict(model=dict(type='ToyModel')))
    runner.train()
    path = str(tmp_path / 'iter_2.pth')

    # that plain torch.load refuses it without the allow-list: tests/tools/test_checkpoint_resume.py
    checkpoint = safe_load(path)
    assert set(checkpoint['state_dict']) == {'linear.weight', 'linear.bias'}
    buffers = checkpoint['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    assert len(buffers['train/loss'].data[0]) == 2


class _Reduces:
    """Pickles as ``function(*args)``: how a malicious checkpoint runs code."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize('payload', [
    _Reduces(print, 'arbitrary call'),
    _Reduces(getattr, HistoryBuffer, '__init__'),
    _Reduces(getattr, np.ndarray, 'tofile'),  # an allowed class, not a statistic
])
def test_safe_load_refuses_other_globals(tmp_path, payload):
    path = str(tmp_path / 'unsafe.pth')
    torch.save({'meta': payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        safe_load(path)


def test_url_checkpoint_uses_hub_cache_or_names_where_to_put_it(tmp_path, monkeypatch):
    from hgkd_mm.models.teachers.checkpoint import resolve_url

    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    url = 'https://example.invalid/mae/teacher.pth'

    def no_network(url, dst, *args, **kwargs):
        raise OSError('no network')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    with pytest.raises(FileNotFoundError, match='teacher.checkpoint'):
        resolve_url(url)
    cached = tmp_path / 'checkpoints' / 'teacher.pth'
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b'x')
    assert resolve_url(url) == str(cached)
    assert resolve_url('local/file.pth') == 'local/file.pth'


def download_worker(rank: int, world: int, tmp: str, fail: bool):
    import time

    import torch.distributed as dist
    from hgkd_mm.models.teachers.checkpoint import resolve_url

    dist.init_process_group('gloo', init_method=f'file://{tmp}/init', rank=rank,
                            world_size=world)
    torch.hub.set_dir(tmp)

    def download(url, dst, *args, **kwargs):
        with open(f'{tmp}/downloads_rank{rank}', 'a') as record:
            record.write(url + '\n')
        if fail:
            raise OSError('no network')
        time.sleep(0.5)  # the other rank would start its own download meanwhile
        with open(dst, 'wb') as file:
            file.write(b'weights')

    torch.hub.download_url_to_file = download
    try:
        result = resolve_url('https://example.invalid/mae/teacher.pth')
    except FileNotFoundError as error:
        result = f'error: {error}'
    with open(f'{tmp}/result_rank{rank}', 'w') as file:
        file.write(result)
    dist.destroy_process_group()


@pytest.mark.parametrize('fail', [False, True])
def test_url_checkpoint_is_downloaded_by_rank_0_alone(tmp_path, fail):
    import torch.multiprocessing as mp
    mp.spawn(download_worker, args=(2, str(tmp_path), fail), nprocs=2, join=True)
    results = [(tmp_path / f'result_rank{rank}').read_text() for rank in range(2)]
    downloads = sorted(p.name for p in tmp_path.glob('downloads_rank*'))
    if fail:  # rank 0's failure does not leave rank 1 waiting; both name the option
        assert all('teacher.checkpoint option' in result for result in results)
        assert downloads == ['downloads_rank0', 'downloads_rank1']
    else:
        assert results == [str(tmp_path / 'checkpoints' / 'teacher.pth')] * 2
        assert downloads == ['downloads_rank0']


@pytest.mark.parametrize('size, bias', [((32, 48), True), ((37, 50), False)])
def test_patch_projection_equals_conv2d(size, bias):
    """The patch embedding as one matrix product: torch's strided Conv2d's outputs and
    gradients, also for a size that is not a multiple of the patch (the rest is dropped)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 16, stride=16, bias=bias)
    patch = PatchProjection.from_conv(conv)
    assert type(patch) is PatchProjection
    assert patch.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(2, 3, *size, requires_grad=True)
    torch.testing.assert_close(patch.matmul_forward(x), conv(x))  # what CUDA inputs run
    grads = torch.autograd.grad(patch.matmul_forward(x).square().sum(), [x, patch.weight])
    expected = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight])
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference, atol=1e-4, rtol=1e-4)  # sum order


@pytest.mark.parametrize('conv', [nn.Conv2d(3, 8, 16, stride=8),
                                  nn.Conv2d(3, 8, 4, 4, padding=1),
                                  nn.Conv2d(4, 8, 4, 4, groups=2)])
def test_other_convolutions_are_kept(conv):
    assert PatchProjection.from_conv(conv) is conv


def test_teacher_embeds_patches_by_matrix_product(files, images, monkeypatch):
    """On CUDA inputs (faked) the teacher's patch embedding is the matrix product, and
    its tokens are the convolution's."""
    teacher = _teacher(files['timm'])
    assert type(teacher.vit.patch_embed.projection) is PatchProjection
    assert 'vit.patch_embed.projection.weight' in teacher.state_dict()
    expected = teacher(images)[0]  # the CPU runs the convolution
    calls = []
    real = PatchProjection.matmul_forward
    monkeypatch.setattr(PatchProjection, 'forward',
                        lambda self, x: calls.append(x.shape) or real(self, x))
    torch.testing.assert_close(teacher(images)[0], expected, **TOL)
    assert calls == [images.shape]


def test_building_the_teacher_draws_what_mmpretrain_draws():
    """The patch projection swap draws nothing from the RNG: the inits after the teacher
    (the student's) are those of a plain mmpretrain VisionTransformer build."""
    from mmpretrain.models.backbones import VisionTransformer
    torch.manual_seed(0)
    _teacher()
    after_teacher = torch.rand(4)
    torch.manual_seed(0)
    VisionTransformer(ARCH, img_size=IMG, patch_size=PATCH, out_type='featmap',
                      final_norm=True, with_cls_token=True)
    assert torch.equal(after_teacher, torch.rand(4))
