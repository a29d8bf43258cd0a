# Copyright (c) mmbinary contributors. All rights reserved.
"""Necks with binary-branch (MBB) convs."""
from .mbb_fpn import MBBFPN

__all__ = ['MBBFPN']
