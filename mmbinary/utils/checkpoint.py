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

* loads with ``weights_only=True`` inside a ``torch.serialization.safe_globals``
  context holding the NumPy array/scalar rebuilders and ``HistoryBuffer``;
* maps the pickled ``builtins.getattr`` to :func:`_history_buffer_getattr`,
  which only returns ``HistoryBuffer``'s own statistics methods;
* only for files you trust, opts in to full unpickling when the environment
  variable ``MMBINARY_TRUSTED_CHECKPOINTS=1`` is set.
"""
import os
import os.path as osp
from typing import Any, Callable, List, Optional, Union

import numpy as np
import torch

TRUSTED_ENV = 'MMBINARY_TRUSTED_CHECKPOINTS'


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


def safe_torch_load(filename: str,
                    map_location: Optional[Union[str, Callable]] = None
                    ) -> Any:
    """``torch.load`` of an mmengine/mmdet/mmseg checkpoint, without running
    code from the file (unless ``MMBINARY_TRUSTED_CHECKPOINTS=1``).

    Args:
        filename (str): path of a local checkpoint.
        map_location: as in :func:`torch.load`.

    Returns:
        The loaded object, usually a dict with ``state_dict`` and ``meta``.
    """
    if os.getenv(TRUSTED_ENV) == '1':
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        try:
            return torch.load(
                filename, map_location=map_location, weights_only=True)
        except Exception as error:
            if 'weights_only' not in str(error):
                raise
            raise RuntimeError(
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
