"""The committed caltech101 split and pre-training pool (configs/splits/)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hgkd_mm.evaluation import splits

SHARED_DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data'


def read_all() -> dict:
    return {part: splits.read_split(part) for part in splits.PARTS}


def test_parts_and_pool_do_not_overlap():
    parts = read_all()
    paths = {part: {path for path, _ in rows} for part, rows in parts.items()}
    assert all(len(paths[part]) == len(rows) for part, rows in parts.items())  # no repeats
    assert not paths['train'] & paths['val']
    assert not paths['train'] & paths['test']
    assert not paths['val'] & paths['test']
    pool = splits.read_pool()
    assert len(set(pool)) == len(pool)
    assert not set(pool) & (paths['val'] | paths['test'])
    assert paths['train'] <= set(pool)  # the train part is in the pool, labels unused
    assert {p.split('/')[0] for p in pool} == {'imagenet-sample', 'caltech101'}


def test_every_class_in_every_part_at_60_20_20():
    parts = read_all()
    counts = {part: {} for part in parts}
    for part, rows in parts.items():
        for _, label in rows:
            counts[part][label] = counts[part].get(label, 0) + 1
    assert set(counts['train']) == set(counts['val']) == set(counts['test']) == set(range(101))
    for label in range(101):
        total = sum(counts[part][label] for part in parts)
        assert counts['test'][label] == round(total * 0.2)
        assert counts['val'][label] == round(total * 0.2)
    # a label is the index of its class folder in sorted order
    names = {}
    for rows in parts.values():
        for path, label in rows:
            names.setdefault(label, set()).add(path.split('/')[2])
    assert all(len(folders) == 1 for folders in names.values())
    in_label_order = [min(names[label]) for label in range(101)]
    assert in_label_order == sorted(in_label_order)


@pytest.mark.skipif(not (SHARED_DATA / 'caltech101' / 'train').is_dir(),
                    reason='needs ../shared/data')
def test_committed_files_are_what_make_split_writes(tmp_path):
    files = splits.write_split(str(SHARED_DATA), str(tmp_path))
    for name, path in files.items():
        committed = Path(splits.SPLIT_DIR) / Path(path).name
        assert Path(path).read_text() == committed.read_text(), name


def test_another_seed_gives_another_split(tmp_path):
    root = tmp_path / 'data'
    for c in ('a', 'b'):
        (root / 'caltech101' / 'train' / c).mkdir(parents=True)
        for i in range(10):
            (root / 'caltech101' / 'train' / c / f'{i}.jpg').write_bytes(b'')
    first, again = splits.make_split(str(root), seed=0), splits.make_split(str(root), seed=0)
    other = splits.make_split(str(root), seed=1)
    assert first == again and first != other
    assert [len(first[p]) for p in splits.PARTS] == [12, 4, 4]


def test_bad_part_and_missing_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match='split part'):
        splits.read_split('holdout')
    with pytest.raises(FileNotFoundError, match='caltech101'):
        splits.make_split(str(tmp_path))
