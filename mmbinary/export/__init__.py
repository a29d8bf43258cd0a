# Copyright (c) mmbinary contributors. All rights reserved.
"""Hand-off to hardware: the packed-model export format, a bit-exact NumPy
runner of whole exported graphs, resource counts and ONNX graphs. The
packed layers' arithmetic comes from :mod:`mmbinary.packed_format`
(re-exported here: ``activation_levels``, ``pack_activation_levels``,
``mbb_conv2d_accumulate_numpy``). The code imported here uses NumPy only;
the exporter (:mod:`mmbinary.export.exporter`) and the test-vector writer
(:mod:`mmbinary.export.vectors`) use PyTorch."""
from mmbinary.packed_format import (activation_levels,
                                    mbb_conv2d_accumulate_numpy,
                                    pack_activation_levels)

from .format import (FORMAT_NAME, FORMAT_VERSION, ExportFormatError,
                     PackedExport, read_export)
from .graph_reference import mbb_layer_numpy, run_export, verify_vectors
from .resources import resource_table, resources

__all__ = [
    'mbb_conv2d_accumulate_numpy', 'activation_levels', 'mbb_layer_numpy',
    'pack_activation_levels', 'run_export', 'verify_vectors', 'FORMAT_NAME',
    'FORMAT_VERSION', 'ExportFormatError', 'PackedExport', 'read_export',
    'resource_table', 'resources'
]
