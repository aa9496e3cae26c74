"""tools/analysis_tools/visualize_distill.py on the demo config with a tiny generated teacher:
pictures and losses, determinism, every student and teacher mode, refused inputs; the PCA
colours against numpy's eigendecomposition."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image

from hgkd_mm.visualization import (evaluating, load_images, load_student_checkpoint,
                                   pca_rgb, seeded_mask)

from demo_setup import IMG_SIZE, write_demo_setup
from helpers import load_tool

tool = load_tool('analysis_tools/visualize_distill.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp('visualize_distill')
    return folder, write_demo_setup(folder)


def build(config, seed=0, **model_options):
    """The config's model, initialised from ``seed`` (``model_options``: dotted keys)."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({f'model.{k}': v for k, v in model_options.items()})
    cfg.model.data_preprocessor = cfg.data_preprocessor
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def save_student(model, path):
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def run(config, checkpoint, out_dir, *images, extra=()):
    return tool.main([str(config), str(checkpoint), *map(str, images), '--out-dir', str(out_dir),
                      *extra])


def test_pictures_and_losses_of_a_checkpoint(setup):
    folder, config = setup
    student = build(config, seed=3, **{'head.loss_on': 'masked'})  # its loss: masked cells
    checkpoint = save_student(student, folder / 'student.pth')
    images = folder / 'images' / 'x'
    records = run(config, checkpoint, folder / 'out', images / '0.png', images)
    # a file and a folder: 1 + 4 images; the repeated name gets its position
    assert [r['picture'] for r in records] == ['0_0.png', '0_1.png', '1.png', '2.png', '3.png']
    saved = json.loads((folder / 'out' / 'losses.json').read_text())
    assert saved['images'] == records and saved['loss'] == 'mse' and saved['img_size'] == IMG_SIZE
    for record in records:
        picture = np.asarray(Image.open(folder / 'out' / record['picture']))
        assert picture.shape == (350, 1500, 3) and picture.std() > 10  # 15 x 3.5 in at 100 dpi

    # the losses are the model's own: HGKD.student_loss with the same mask, one image at a
    # time, averages the masked positions (loss_on='masked') or all of them (loss_on='all')
    paths = [str(images / '0.png')] + [str(images / f'{i}.png') for i in range(4)]
    inputs = student.data_preprocessor(
        dict(inputs=load_images(paths, IMG_SIZE), data_samples=None))['inputs']
    mask = seeded_mask(student, len(paths), IMG_SIZE, seed=0)
    every = build(config, seed=3, **{'head.loss_on': 'all'})
    load_student_checkpoint(every, str(checkpoint))
    masked_share = 1 - mask.float().mean((1, 2))  # stride-32 cells = equal areas
    with evaluating(student), evaluating(every):
        for i, record in enumerate(records):
            one = (inputs[i:i + 1], mask[i:i + 1], student.teacher(inputs[i:i + 1]))
            masked = student.student_loss(*one)['loss_feat'].item()
            total = every.student_loss(*one)['loss_feat'].item()
            visible = (total - masked_share[i] * masked) / (1 - masked_share[i])
            assert record['loss_masked'] == pytest.approx(masked, rel=1e-5)
            assert record['loss_visible'] == pytest.approx(visible.item(), rel=1e-4)


def test_same_seed_same_pictures_random_student(setup):
    folder, config = setup
    images = [folder / 'images' / 'x' / f'{i}.png' for i in range(2)]
    first = run(config, 'random', folder / 'a', *images, extra=['--mask-seed', '7'])
    again = run(config, 'random', folder / 'b', *images, extra=['--mask-seed', '7'])
    other = run(config, 'random', folder / 'c', *images, extra=['--mask-seed', '8'])
    assert first == again
    for record in first:
        name = record['picture']
        assert (folder / 'a' / name).read_bytes() == (folder / 'b' / name).read_bytes()
    # another seed: other masks (and another untrained student)
    assert [r['loss_masked'] for r in other] != [r['loss_masked'] for r in first]
    assert all((folder / 'a' / r['picture']).read_bytes() != (folder / 'c' / r['picture'])
               .read_bytes() for r in first)
    # a checkpoint's student is not the untrained one
    trained = run(config, save_student(build(config, seed=3), folder / 's3.pth'), folder / 'd',
                  *images, extra=['--mask-seed', '7'])
    assert [r['loss_masked'] for r in trained] != [r['loss_masked'] for r in first]


@pytest.mark.parametrize('options', [
    ['model.backbone.depth=50', 'model.neck.in_channels=(256,512,1024,2048)'],
    ['model.backbone.backend=masked'],
    ['model.head.loss=cosine', 'model.head.target_norm=none'],
    ['model.teacher.input_mode=masked', 'model.teacher.decoder_num_heads=4'],
    ['model.backbone._delete_=True', 'model.backbone.type=HGKDSparseConvNeXt',
     'model.backbone.arch=atto', 'model.backbone.out_indices=(0,1,2,3)',
     'model.neck.in_channels=(40,80,160,320)'],
    ['model.backbone._delete_=True', 'model.backbone.type=HGKDSparseMobileNetV2',
     'model.backbone.out_indices=(1,2,4,7)', 'model.neck.in_channels=(24,32,96,1280)'],
    ['model.teacher.patch_size=14', 'model.teacher.layer_scale_init_value=1e-5',
     'model.teacher.num_register_tokens=4', 'model.teacher.pos_embed_prefix=False',
     'model.teacher.checkpoint=None'],
], ids=['resnet50', 'masked-backend', 'cosine-loss', 'mae-decoder-teacher', 'convnext',
        'mobilenet-v2', 'dinov2-p14-registers'])
def test_students_and_teachers(setup, options):
    folder, config = setup
    if 'model.teacher.input_mode=masked' in options:
        options = options + [f'model.teacher.checkpoint={mae_teacher(folder)}']
    out = folder / ('out_' + '_'.join(options[:2]).replace('=', '_'))
    images = [folder / 'images' / 'x' / f'{i}.png' for i in range(2)]
    records = run(config, 'random', out, *images, extra=['--cfg-options', *options])
    assert len(records) == 2
    assert all(np.isfinite(r['loss_masked']) and np.isfinite(r['loss_visible']) for r in records)


def mae_teacher(folder):
    """The tiny teacher plus an MAE decoder (``neck.`` keys, as mmpretrain's MAE files)."""
    from mmpretrain.models.necks import MAEPretrainDecoder
    path = folder / 'teacher_mae.pth'
    if not path.exists():
        state = torch.load(folder / 'teacher.pth')['state_dict']
        torch.manual_seed(1)
        decoder = MAEPretrainDecoder(num_patches=16, embed_dim=64, decoder_embed_dim=64,
                                     decoder_depth=1, decoder_num_heads=4, mlp_ratio=2)
        state.update({f'neck.{k}': v for k, v in decoder.state_dict().items()})
        torch.save({'state_dict': state}, path)
    return path


def test_refused_by_name(setup, capsys):
    folder, config = setup
    (folder / 'empty').mkdir()
    for images, message in (([folder / 'images', folder / 'missing.png'],
                             'image ' + str(folder / 'missing.png') + ': no such file'),
                            ([folder / 'empty'], 'no images in this folder')):
        with pytest.raises(SystemExit):
            run(config, 'random', folder / 'x', *images)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(config, folder / 'nothing.pth', folder / 'x', folder / 'images')
    assert 'checkpoint: no file' in capsys.readouterr().err
    # a checkpoint of another student: a wider decoder, or a ResNet-34
    for options in ({'neck.channels': 64}, {'backbone.depth': 34}):
        other = save_student(build(config, **options), folder / 'other.pth')
        with pytest.raises(SystemExit, match=r'other\.pth is for another student') as error:
            run(config, other, folder / 'x', folder / 'images')
        assert 'neck' in str(error.value) or 'layer' in str(error.value)
    assert not (folder / 'x').exists()  # nothing written


def test_pca_colours_follow_numpy_eigenvectors():
    torch.manual_seed(0)
    # tokens with three dominant directions of distinct variance
    basis = torch.linalg.qr(torch.randn(16, 3))[0]  # (D, 3) orthonormal
    target = (torch.randn(2, 5, 5, 3) * torch.tensor([5., 3., 2.])) @ basis.T
    target = (target + 0.1 * torch.randn(2, 5, 5, 16)).permute(0, 3, 1, 2)  # (B, D, Ht, Wt)
    target_rgb, prediction_rgb = pca_rgb(target, target)
    assert torch.equal(target_rgb, prediction_rgb)  # the same projection and scale
    tokens = target.permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    centred = tokens - tokens.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    reference = centred @ vectors[:, ::-1][:, :3]  # the top three components
    ours = target_rgb.reshape(-1, 3).double().numpy()
    for c in range(3):
        assert abs(np.corrcoef(ours[:, c], reference[:, c])[0, 1]) == pytest.approx(1, abs=1e-6)
        assert ours[:, c].min() == 0 and ours[:, c].max() == pytest.approx(1)
    # the prediction is scaled as the target (then clipped): twice the target saturates
    _, doubled = pca_rgb(target, target * 2)
    assert doubled.min() == 0 and doubled.max() == 1 and not torch.equal(doubled, target_rgb)
