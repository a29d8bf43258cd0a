# Copyright (c) mmbinary contributors. All rights reserved.
from .atomic_write import atomic_open, atomic_write_files, atomic_write_path
from .checkpoint import (CheckpointError, CorruptCheckpointError,
                         UntrustedCheckpointError, check_checkpoint_file,
                         check_conversion_paths,
                         register_safe_checkpoint_loader, safe_torch_load)

__all__ = [
    'atomic_open', 'atomic_write_files', 'atomic_write_path',
    'CheckpointError', 'CorruptCheckpointError', 'UntrustedCheckpointError',
    'check_checkpoint_file', 'check_conversion_paths',
    'register_safe_checkpoint_loader', 'safe_torch_load'
]
