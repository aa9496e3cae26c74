"""The teacher checkpoint readers: the timm, official MAE and mmpretrain zoo formats give the
same weights, a wrong architecture lists the keys, a URL is downloaded once per machine."""
import pytest
import torch

from hgkd_mm.models.teachers import FrozenViTTeacher, load_teacher_checkpoint

from helpers import random_mask
from timm_reference import ARCH, DEPTH, EMBED, IMG, PATCH, build_teacher


def test_load_teacher_checkpoint_formats(files):
    timm_encoder, no_decoder = load_teacher_checkpoint(files['timm'])
    zoo_encoder, zoo_decoder = load_teacher_checkpoint(files['zoo'])
    mae_encoder, mae_decoder = load_teacher_checkpoint(files['mae'])
    assert no_decoder is None
    assert 'layers.1.ffn.layers.0.0.weight' in timm_encoder and 'head.weight' not in timm_encoder
    assert timm_encoder.keys() == zoo_encoder.keys() == mae_encoder.keys()
    assert zoo_decoder.keys() == mae_decoder.keys()
    assert 'decoder_blocks.1.ffn.layers.1.bias' in mae_decoder and 'ln1.weight' in mae_decoder


def test_three_formats_give_identical_tokens(files, images):
    grids = {name: build_teacher(path)(images)[0] for name, path in files.items()}
    torch.testing.assert_close(grids['mae'], grids['timm'], atol=0, rtol=0)
    torch.testing.assert_close(grids['zoo'], grids['timm'], atol=0, rtol=0)

    mask = random_mask(2, 2, 2, keep=2, seed=4)
    masked = {name: build_teacher(files[name], input_mode='masked')(images, mask)[0]
              for name in ('mae', 'zoo')}
    torch.testing.assert_close(masked['zoo'], masked['mae'], atol=0, rtol=0)


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
