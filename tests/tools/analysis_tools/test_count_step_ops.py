"""tools/analysis_tools/count_step_ops.py: what its counter (hgkd_mm.benchmark.CountOps)
counts, and a tiny run."""
import json

import pytest
import torch

from hgkd_mm.benchmark import CountOps
from test_benchmark_pretrain import TINY_CONFIG
from helpers import load_tool


@pytest.fixture(scope='module')
def tool():
    return load_tool('analysis_tools/count_step_ops.py')


def test_counter_skips_views_and_matmul_bytes():
    x = torch.randn(4, 8)
    with CountOps() as record:
        y = x.view(8, 4) * 2  # a view (not counted) and one op: 128 bytes read, 128 written
        torch.mm(y, x)  # counted as an op, its bytes are not
        x.sum(dim=0)  # 128 read, 32 written, per channel
    assert record.ops == {'mul': 1, 'mm': 1, 'sum': 1}
    assert record.bytes == 128 + 128 + 128 + 32
    assert record.per_channel == 3  # every tensor here is small


def test_tiny_run(tool, tmp_path, capsys):
    config = tmp_path / 'tiny.py'
    config.write_text(TINY_CONFIG)
    out = tmp_path / 'counts.json'
    result = tool.main([str(config), '--batch-size', '1', '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert (result['img_size'], result['amp']) == (64, 'bf16')
    hgkd, resnet = result['rows']
    assert resnet['name'] == 'torchvision resnet18'
    for row in (hgkd, resnet):
        assert 0 < row['per_channel_ops'] < row['ops'] and row['bytes_per_image'] > 0
    # the masked norms' per-channel statistics: many more small ops than native BatchNorm
    assert hgkd['per_channel_ops'] > 10 * resnet['per_channel_ops']
    assert 'H-GKD student (masked backend, masked norms in torch ops)' in capsys.readouterr().out
    # the packed backend: BatchNorm2d on the visible tiles, fewer ops and bytes than masked
    packed = tool.main([str(config), '--batch-size', '1', '--backend', 'packed'])['rows'][0]
    assert packed['name'] == 'H-GKD student (packed backend, BatchNorm2d on the tiles)'
    assert packed['per_channel_ops'] < hgkd['per_channel_ops'] / 3
    assert packed['bytes_per_image'] < hgkd['bytes_per_image']
