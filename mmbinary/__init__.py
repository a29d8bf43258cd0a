# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary: multi-precision binary-branch networks for OpenMMLab.

Importing the package registers its layers (``MBBConv``, ``MBBLinear``) and
models, and makes mmengine load local checkpoints safely under torch >= 2.6.
It works without the compiled extension; only the packed ops need it.
"""
from . import ops  # noqa: F401  (loads mmbinary._C when it was built)
from . import models, quant  # noqa: F401  (registers MBBConv, MBBLinear)
from .utils import register_safe_checkpoint_loader
from .version import __version__, version_info

register_safe_checkpoint_loader()

__all__ = ['__version__', 'version_info']
