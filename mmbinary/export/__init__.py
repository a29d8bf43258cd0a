# Copyright (c) mmbinary contributors. All rights reserved.
"""Hand-off to hardware: the packed-model export format, a bit-exact NumPy
reference of the packed layers and of whole exported graphs, resource
counts and ONNX graphs. Nothing imported here needs PyTorch; the exporter
(:mod:`mmbinary.export.exporter`) and the test-vector writer
(:mod:`mmbinary.export.vectors`) do."""
from .backbone_reference import (activation_levels, mbb_layer_numpy,
                                 pack_activation_levels, run_export,
                                 verify_vectors)
from .format import (FORMAT_NAME, FORMAT_VERSION, ExportFormatError,
                     PackedExport, read_export)
from .numpy_reference import mbb_conv2d_accumulate_numpy
from .resources import resource_table, resources

__all__ = [
    'mbb_conv2d_accumulate_numpy', 'activation_levels', 'mbb_layer_numpy',
    'pack_activation_levels', 'run_export', 'verify_vectors', 'FORMAT_NAME',
    'FORMAT_VERSION', 'ExportFormatError', 'PackedExport', 'read_export',
    'resource_table', 'resources'
]
