# Copyright (c) mmbinary contributors. All rights reserved.
from .checkpoint import register_safe_checkpoint_loader, safe_torch_load

__all__ = ['register_safe_checkpoint_loader', 'safe_torch_load']
