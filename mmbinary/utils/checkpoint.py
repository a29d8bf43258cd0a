# Copyright (c) mmbinary contributors. All rights reserved.
"""Safe loading of mmengine checkpoints under torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True``, which refuses the few
non-tensor objects that mmengine 0.10.7 writes into every checkpoint (its
``message_hub`` holds :class:`mmengine.logging.HistoryBuffer` objects with
NumPy arrays and scalars), so ``resume`` and ``load_from`` fail.

Our choice: keep ``weights_only=True`` and allow exactly those objects,
rather than fall back to full unpickling, which runs arbitrary code from a
file. :func:`register_safe_checkpoint_loader` (called by ``import mmbinary``,
hence by every config with ``custom_imports=dict(imports=['mmbinary'])``)
replaces mmengine's loader of local files with one that

* loads with ``weights_only=True`` inside a
  ``torch.serialization.safe_globals`` context holding the NumPy
  array/scalar rebuilders and ``HistoryBuffer``;
* maps the pickled ``builtins.getattr`` to :func:`_history_buffer_getattr`,
  which only returns ``HistoryBuffer``'s own statistics methods;
* only for files you trust, opts in to full unpickling when the environment
  variable ``MMBINARY_TRUSTED_CHECKPOINTS=1`` is set.

Before any unpickling, the file is checked (:func:`check_checkpoint_file`):
an empty, truncated or damaged file (a zip member failing its CRC-32) or
one that is not a checkpoint raises :class:`CorruptCheckpointError`, which
names the file and never suggests the trusted switch; only an intact file
holding disallowed objects raises :class:`UntrustedCheckpointError`.
"""
import os
import os.path as osp
import zipfile
from typing import Any, Callable, List, Optional, Union

import numpy as np
import torch

TRUSTED_ENV = 'MMBINARY_TRUSTED_CHECKPOINTS'
#: How a pickle of protocol >= 2 (the legacy checkpoint format) starts.
_PICKLE_START = b'\x80'


def _history_buffer_getattr(obj: Any, name: str) -> Callable:
    """Stand-in for the ``getattr`` a pickled ``HistoryBuffer`` calls.

    Raises:
        pickle.UnpicklingError: for any object but ``HistoryBuffer`` or any
            name but one of its registered statistics methods.
    """
    import pickle

    from mmengine.logging import HistoryBuffer
    allowed = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'
    }
    if obj is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(
            f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint '
            'with weights_only=True; set '
            f'{TRUSTED_ENV}=1 to load a checkpoint you trust in full')
    return getattr(obj, name)


def checkpoint_safe_globals() -> List[Union[Callable, tuple]]:
    """The objects beyond tensors that mmengine checkpoints may hold."""
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    dtype_classes = [
        type(np.dtype(name)) for name in (
            'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16',
            'uint32', 'uint64', 'float16', 'float32', 'float64', 'str',
            'object')
    ]
    return [
        HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
        multiarray.scalar, *dtype_classes,
        (_history_buffer_getattr, 'builtins.getattr')
    ]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded (the message names it)."""


class CorruptCheckpointError(CheckpointError):
    """Empty, truncated, damaged or not a PyTorch checkpoint at all: the
    trusted switch would not help, the file itself is broken."""


class UntrustedCheckpointError(CheckpointError):
    """An intact checkpoint that holds objects beyond tensors and the few
    that mmengine checkpoints need."""


def check_checkpoint_file(filename: str) -> None:
    """Check that ``filename`` is a complete, undamaged PyTorch checkpoint.

    A checkpoint written by ``torch.save`` is a zip archive whose members
    carry CRC-32 checksums; they are all verified (``torch.load`` does not
    check them: a flipped bit in a tensor loads silently). Files in the
    legacy (pre-1.6, non-zip) format have no checksums and are let through.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: naming the file and what is wrong.
    """
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} not found')
    if osp.getsize(filename) == 0:
        raise CorruptCheckpointError(
            f'{filename} is empty (0 bytes), not a checkpoint: was its '
            'writing interrupted?')
    with open(filename, 'rb') as file:
        head = file.read(4)
    if not zipfile.is_zipfile(filename):
        if head.startswith(b'PK'):
            raise CorruptCheckpointError(
                f'{filename} is truncated or damaged: it starts as a PyTorch '
                'checkpoint (a zip archive) but its end is missing or '
                'unreadable; write or copy it again')
        if not head.startswith(_PICKLE_START):
            raise CorruptCheckpointError(
                f'{filename} is not a PyTorch checkpoint (it starts with '
                f'{head!r}, neither a zip archive nor a pickle)')
        return  # the legacy format: nothing to verify
    try:
        with zipfile.ZipFile(filename) as archive:
            names = archive.namelist()
            if not any(name == 'data.pkl' or name.endswith('/data.pkl')
                       for name in names):
                raise CorruptCheckpointError(
                    f'{filename} is a zip archive but not a PyTorch '
                    'checkpoint (it has no data.pkl)')
            damaged = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
            ValueError) as error:
        raise CorruptCheckpointError(
            f'{filename} is truncated or damaged: {error}') from None
    if damaged is not None:
        raise CorruptCheckpointError(
            f'{filename} is damaged: its member {damaged!r} fails its CRC-32 '
            'check (changed bytes); write or copy it again')


def _names_disallowed_objects(error: Exception) -> bool:
    """Whether a ``weights_only`` failure is about the objects the file
    holds (an intact pickle referring to classes or functions outside the
    allow list), rather than about unreadable bytes."""
    import pickle
    return isinstance(error, pickle.UnpicklingError) and (
        'global' in str(error).lower() or 'refusing getattr' in str(error))


def _reason(error: Exception) -> str:
    """The gist of a ``torch.load`` error, without torch's advice to load
    with ``weights_only=False`` (which would not help a damaged file)."""
    text = str(error)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1].split('Check the documentation')[0]
    return f'{type(error).__name__}: {" ".join(text.split())}'


def safe_torch_load(filename: str,
                    map_location: Optional[Union[str, Callable]] = None
                    ) -> Any:
    """``torch.load`` of an mmengine/mmdet/mmseg checkpoint, without running
    code from the file (unless ``MMBINARY_TRUSTED_CHECKPOINTS=1``).

    The file is checked first (:func:`check_checkpoint_file`): a damaged
    one is refused as such, never with advice to trust it.

    Args:
        filename (str): path of a local checkpoint.
        map_location: as in :func:`torch.load`.

    Returns:
        The loaded object, usually a dict with ``state_dict`` and ``meta``.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: the file is empty, truncated, damaged or not
            a checkpoint.
        UntrustedCheckpointError: the file is intact but holds objects that
            ``weights_only=True`` refuses.
    """
    check_checkpoint_file(filename)
    if os.getenv(TRUSTED_ENV) == '1':
        try:
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        except Exception as error:
            raise CorruptCheckpointError(
                f'{filename} could not be loaded (in full, {TRUSTED_ENV}=1): '
                f'{_reason(error)}') from error
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        try:
            return torch.load(
                filename, map_location=map_location, weights_only=True)
        except Exception as error:
            if not _names_disallowed_objects(error):
                raise CorruptCheckpointError(
                    f'{filename} could not be read as a checkpoint (its '
                    'checksums are intact: was it written by something '
                    f'else than torch.save?): {_reason(error)}') from error
            raise UntrustedCheckpointError(
                f'could not load {filename!r} with weights_only=True: it '
                'holds objects beyond tensors and the few that mmengine '
                'checkpoints need. If you trust the file, set '
                f'{TRUSTED_ENV}=1 to load it in full (this runs code from '
                f'the file). Details: {error}') from error


def register_safe_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints with :func:`safe_torch_load`.

    Covers ``load_from``, ``resume`` and ``init_cfg=dict(type='Pretrained')``
    with local paths, which all go through mmengine's ``CheckpointLoader``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    @CheckpointLoader.register_scheme(prefixes='', force=True)
    def load_from_local(filename: str, map_location=None) -> Any:
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return safe_torch_load(filename, map_location=map_location)


def check_conversion_paths(config: str, checkpoint: str, out: str,
                           force: bool) -> None:
    """The paths of a tool that reads CONFIG and CHECKPOINT and writes a
    new checkpoint OUT (``tools/pack_model.py``,
    ``tools/model_converters/*``): the two inputs exist, OUT's folder
    exists, and an existing OUT is replaced only with ``force``.

    Raises:
        ValueError: what is wrong, naming the path.
    """
    for what, path in (('config', config), ('checkpoint', checkpoint)):
        if not osp.isfile(path):
            raise ValueError(f'{what} not found: {path}')
    if osp.exists(out) and not force:
        raise ValueError(f'{out} exists; pass --force to overwrite it')
    out_dir = osp.dirname(osp.abspath(out))
    if not osp.isdir(out_dir):
        raise ValueError(f'the folder of OUT does not exist: {out_dir}')
