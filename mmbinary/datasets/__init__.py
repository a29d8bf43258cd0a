# Copyright (c) mmbinary contributors. All rights reserved.
"""Dataset helpers.

:mod:`mmbinary.datasets.demo_data` builds the embedded demo data (see
``docs/demo_data.md`` and ``tools/dataset_converters/prepare_demo_data.py``).
It is not imported here, so ``import mmbinary`` stays light.
"""
