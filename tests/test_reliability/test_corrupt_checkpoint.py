# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 4: a damaged file is reported as damaged, naming it, never with
advice to switch the safe loader off; only an intact file holding other
objects gets that advice."""
import os
import zipfile

import pytest
import torch

from mmbinary.utils.checkpoint import TRUSTED_ENV, safe_torch_load


def _member_offset(path, suffix: str) -> tuple:
    """(offset, size) of the stored bytes of the zip member ending in
    ``suffix`` (torch.save stores members uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist()
                    if i.filename.endswith(suffix))
    with open(path, 'rb') as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(file.read(2), 'little')
                                     for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length, \
        info.compress_size


def flipped(source, target, suffix: str, position: int, bit: int = 0):
    data = bytearray(source.read_bytes())
    offset, size = _member_offset(source, suffix)
    data[offset + position % size] ^= 1 << bit
    target.write_bytes(bytes(data))
    return target


@pytest.fixture
def good(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save(dict(state_dict=dict(weight=torch.arange(64.)),
                    meta=dict(epoch=3, note='x' * 200)), path)
    return path


def damaged_files(good, tmp_path):
    data = good.read_bytes()
    files = {
        'empty': b'',
        'text': b'this is a text file, not a checkpoint\n',
        'truncated': data[:len(data) // 2],
        'truncated end': data[:-8],
    }
    paths = {}
    for name, content in files.items():
        path = tmp_path / f'{name.replace(" ", "_")}.pth'
        path.write_bytes(content)
        paths[name] = path
    # one flipped bit in the pickle, at several places, and in a tensor
    for index, position in enumerate((5, 40, 97, 150, 260)):
        paths[f'pickle bit {position}'] = flipped(
            good, tmp_path / f'pickle{index}.pth', 'data.pkl', position,
            index % 8)
    paths['tensor bit'] = flipped(good, tmp_path / 'tensor.pth', 'data/0',
                                  17, 6)
    not_torch = tmp_path / 'other.zip'
    with zipfile.ZipFile(not_torch, 'w') as archive:
        archive.writestr('readme.txt', 'hello')
    paths['a zip of something else'] = not_torch
    return paths


def test_damaged_files_are_reported_as_damaged(good, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    assert torch.equal(safe_torch_load(str(good))['state_dict']['weight'],
                       torch.arange(64.))
    for name, path in damaged_files(good, tmp_path).items():
        with pytest.raises(Exception) as info:
            safe_torch_load(str(path))
        message = str(info.value)
        assert type(info.value).__name__ == 'CorruptCheckpointError', (
            name, repr(info.value))
        assert str(path) in message, (name, message)
        assert TRUSTED_ENV not in message, (name, message)
        assert 'trust' not in message, (name, message)
    # The trusted switch does not hide the damage either.
    monkeypatch.setenv(TRUSTED_ENV, '1')
    for name, path in damaged_files(good, tmp_path).items():
        with pytest.raises(Exception) as info:
            safe_torch_load(str(path))
        assert type(info.value).__name__ == 'CorruptCheckpointError', name
        assert str(path) in str(info.value), name


class RunsCode:

    def __reduce__(self):
        return (os.system, ('echo should-not-run', ))


class Plain:
    """A harmless object, still not one a checkpoint needs."""


def test_only_intact_files_with_other_objects_get_the_trust_advice(
        tmp_path, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    for name, value in (('code', RunsCode()), ('plain', Plain())):
        path = tmp_path / f'{name}.pth'
        torch.save(dict(state_dict={}, payload=value), path)
        with pytest.raises(RuntimeError) as info:
            safe_torch_load(str(path))
        assert type(info.value).__name__ == 'UntrustedCheckpointError'
        assert TRUSTED_ENV in str(info.value) and str(path) in str(info.value)


def test_mmengine_loading_reports_the_damage(good, tmp_path):
    """``load_from`` / ``resume`` go through the same check."""
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmbinary  # noqa: F401  (registers the safe loader)
    path = flipped(good, tmp_path / 'bad.pth', 'data/0', 3)
    with pytest.raises(Exception, match='CRC') as info:
        _load_checkpoint(str(path))
    assert type(info.value).__name__ == 'CorruptCheckpointError'
