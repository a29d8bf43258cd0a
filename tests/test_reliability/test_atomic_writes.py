# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 5: a write that fails half-way leaves the destination as it was
(the source checkpoint of ``pack_model.py CKPT CKPT --force`` survives)."""
import errno
import importlib.util
import os
import os.path as osp
import sys

import pytest
import torch
from tiny_detector import REPO


def failing_save(obj, path, *args, **kwargs):
    """``torch.save`` on a full disk: some bytes, then an error."""
    with open(path, 'wb') as file:
        file.write(b'PK\x03\x04 half a checkpoint')
    raise OSError(errno.ENOSPC, 'No space left on device')


def leftovers(folder):
    """Temporary files left behind (hidden, beside the destination)."""
    return sorted(name for name in os.listdir(folder)
                  if name.startswith('.'))


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    from mmbinary.utils.atomic_write import atomic_open, atomic_write_path
    path = tmp_path / 'model.pth'
    torch.save(dict(value=torch.arange(4)), path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='No space'):
        with atomic_write_path(str(path)) as temp:
            torch.save({}, temp)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    with pytest.raises(ZeroDivisionError):
        with atomic_open(str(tmp_path / 'new.json')) as file:
            file.write('{"half": ')
            1 / 0
    assert not (tmp_path / 'new.json').exists()
    assert leftovers(tmp_path) == []


def test_a_complete_write_replaces_the_file(tmp_path):
    from mmbinary.utils.atomic_write import atomic_open, atomic_write_path
    path = tmp_path / 'summary.md'
    path.write_text('old')
    with atomic_open(str(path), 'w') as file:
        assert osp.dirname(file.name) == str(tmp_path)
        assert file.name.endswith('.md')  # writers may pick the format by it
        file.write('new')
    assert path.read_text() == 'new' and leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError, match='does not exist'):
        with atomic_write_path(str(tmp_path / 'missing' / 'x.pth')):
            pass
    with pytest.raises(RuntimeError, match='nothing was written'):
        with atomic_write_path(str(tmp_path / 'never.pth')):
            pass


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        f'tool_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_model_onto_its_source_survives_a_full_disk(
        tiny, tmp_path, monkeypatch):
    source = tmp_path / 'epoch_1.pth'
    source.write_bytes(tiny['checkpoint'].read_bytes())
    before = source.read_bytes()
    pack_model = load_tool('pack_model')
    monkeypatch.setattr(sys, 'argv', [
        'pack_model.py', str(tiny['config']), str(source), str(source),
        '--force'
    ])
    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises((OSError, SystemExit), match='No space'):
        pack_model.main()
    assert source.read_bytes() == before
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    torch.load(source, weights_only=True)  # still the trained checkpoint


@pytest.mark.slow
def test_pack_model_under_a_file_size_limit_keeps_its_source(tiny, tmp_path):
    """The issue's case: ``ulimit -f`` below the packed checkpoint's size,
    OUT = CHECKPOINT, --force."""
    import resource
    import subprocess
    source = tmp_path / 'epoch_1.pth'
    source.write_bytes(tiny['checkpoint'].read_bytes())
    before = source.read_bytes()
    limit = tiny['packed'].stat().st_size // 2

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    environ = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1',
                   PYTHONPATH=REPO, PYTHONDONTWRITEBYTECODE='1')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'pack_model.py'),
         str(tiny['config']), str(source), str(source), '--force'],
        cwd=str(tmp_path), env=environ, capture_output=True, text=True,
        timeout=300, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert f'could not write {source}' in result.stderr
    assert 'nothing was replaced' in result.stderr
    assert source.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_files_written_together_appear_together(tmp_path):
    from mmbinary.utils.atomic_write import atomic_write_files
    folder = tmp_path / 'export'
    folder.mkdir()
    (folder / 'index.json').write_text('old index')
    (folder / 'data.bin').write_text('old data')
    (folder / 'notes.txt').write_text('the user\'s')
    with pytest.raises(OSError):
        with atomic_write_files(str(folder), last=('index.json', )) as stage:
            open(osp.join(stage, 'data.bin'), 'w').write('new data')
            raise OSError(errno.ENOSPC, 'No space left on device')
    assert sorted(os.listdir(folder)) == ['data.bin', 'index.json',
                                          'notes.txt']
    assert (folder / 'data.bin').read_text() == 'old data'
    with atomic_write_files(str(folder), last=('index.json', )) as stage:
        for name in ('data.bin', 'index.json', 'more.bin'):
            open(osp.join(stage, name), 'w').write(f'new {name}')
    assert sorted(os.listdir(folder)) == ['data.bin', 'index.json',
                                          'more.bin', 'notes.txt']
    assert (folder / 'index.json').read_text() == 'new index.json'
    assert (folder / 'notes.txt').read_text() == 'the user\'s'
