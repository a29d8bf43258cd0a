# Copyright (c) mmbinary contributors. All rights reserved.
"""Write a file completely or not at all.

A file is written under a temporary name in its own folder and renamed
into place (``os.replace``, atomic on POSIX and Windows within one file
system) only when the writer finished without an error. A write that fails
half-way (a full disk, a file size limit, an interrupted process) leaves
whatever was at the destination before untouched, so that
``tools/pack_model.py CFG ckpt.pth ckpt.pth --force`` can not destroy the
trained model. Example::

    with atomic_write_path('work_dirs/packed.pth') as temp:
        torch.save(checkpoint, temp)

    with atomic_open('results.json', 'w', encoding='utf-8') as file:
        json.dump(results, file)

Files that belong together (an export directory) are written into a
temporary folder beside them and moved into place only when all of them
are complete (:func:`atomic_write_files`)::

    with atomic_write_files('export', last=('manifest.json', )) as stage:
        write_everything(stage)
"""
import contextlib
import os
import os.path as osp
import secrets
import shutil
from typing import IO, Iterator, Optional, Sequence

#: Marks the temporary files (``.<name>.<random>.partial<suffix>``).
PARTIAL_TAG = '.partial'


def _temp_path(path: str) -> str:
    folder, name = osp.split(osp.abspath(path))
    stem, suffix = osp.splitext(name)
    # The suffix is kept: some writers (OpenCV) pick the format from it.
    return osp.join(folder,
                    f'.{stem}.{secrets.token_hex(4)}{PARTIAL_TAG}{suffix}')


def _fsync(path: str) -> None:
    file = os.open(path, os.O_RDONLY)
    try:
        os.fsync(file)
    finally:
        os.close(file)


@contextlib.contextmanager
def atomic_write_path(path: str) -> Iterator[str]:
    """A temporary path to write ``path`` through, renamed into place when
    the block ends without an error.

    Args:
        path (str): the destination file. Its folder must exist.

    Yields:
        str: a path in the same folder (same suffix) to write to. The block
        must leave a file there; on an error it is removed and ``path``
        keeps its previous contents (or stays absent).

    Raises:
        FileNotFoundError: the destination's folder does not exist.
    """
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'cannot write {path}: its folder {folder} does not exist')
    temp = _temp_path(path)
    try:
        yield temp
        if not osp.isfile(temp):
            raise RuntimeError(f'nothing was written for {path}')
        _fsync(temp)
        os.replace(temp, path)
    finally:
        if osp.lexists(temp):
            os.remove(temp)


@contextlib.contextmanager
def atomic_open(path: str,
                mode: str = 'w',
                encoding: Optional[str] = None) -> Iterator[IO]:
    """``open(path, mode)`` for writing, through :func:`atomic_write_path`.

    Args:
        path (str): the destination file.
        mode (str): ``'w'`` or ``'wb'`` (the file is always written anew).
        encoding (str, optional): for text mode; UTF-8 when not given.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    if mode == 'w' and encoding is None:
        encoding = 'utf-8'
    with atomic_write_path(path) as temp:
        with open(temp, mode, encoding=encoding) as file:
            yield file


@contextlib.contextmanager
def atomic_write_files(folder: str,
                       last: Sequence[str] = ()) -> Iterator[str]:
    """A temporary folder inside ``folder`` to write several files into;
    when the block ends without an error each file is moved into
    ``folder`` (``os.replace``), those named in ``last`` (an index that
    describes the others) after the rest.

    On an error nothing in ``folder`` changes. Each file is replaced
    atomically; a process killed while the files are being moved (a few
    renames) can leave some new files beside an old index, which a reader
    that checks the index's digests notices.

    Args:
        folder (str): the destination folder (created if missing).
        last (Sequence[str]): file names to move last, in this order.

    Yields:
        str: the temporary folder (flat: files only).
    """
    os.makedirs(folder, exist_ok=True)
    stage = osp.join(folder, f'.{secrets.token_hex(4)}{PARTIAL_TAG}')
    os.mkdir(stage)
    try:
        yield stage
        names = sorted(os.listdir(stage))
        for name in names:
            if not osp.isfile(osp.join(stage, name)):
                raise RuntimeError(f'{osp.join(stage, name)} is not a file; '
                                   'only files can be moved into place')
        ordered = [n for n in names if n not in last] + [
            n for n in last if n in names
        ]
        for name in ordered:
            _fsync(osp.join(stage, name))
        for name in ordered:
            os.replace(osp.join(stage, name), osp.join(folder, name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
