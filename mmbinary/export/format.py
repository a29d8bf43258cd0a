# Copyright (c) mmbinary contributors. All rights reserved.
"""The packed-model export format: write it, read it back, validate it.

An export directory holds::

    manifest.json        format name and version, layers, graph, files
    model.safetensors    every tensor of the exported part (little endian)
    vectors.safetensors  test vectors (optional, tools/export_packed.py
                         --vectors N)
    resources.md         the resource table (also in the manifest)
    model_custom.onnx, model_plain.onnx   (optional, --onnx)

``docs/export.md`` describes every field; the packed tensors follow
:mod:`mmbinary.packed_format`. This module's code uses NumPy and
``safetensors`` only (no PyTorch tensors).
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional

import numpy as np

from mmbinary.packed_format import (ACC_LIMIT, MAX_BITS, MIN_BITS,
                                    accumulator_bound, check_pad_bits,
                                    num_group_words, tap_weight_sums)

FORMAT_NAME = 'mmbinary-packed'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
MODEL_FILE = 'model.safetensors'
VECTORS_FILE = 'vectors.safetensors'
RESOURCES_FILE = 'resources.md'
ONNX_CUSTOM_FILE = 'model_custom.onnx'
ONNX_PLAIN_FILE = 'model_plain.onnx'
#: Every file this format writes (the tool replaces only these).
EXPORT_FILES = (MANIFEST, MODEL_FILE, VECTORS_FILE, RESOURCES_FILE,
                ONNX_CUSTOM_FILE, ONNX_PLAIN_FILE)

#: Layer kinds.
MBB_KINDS = ('mbb_conv2d', 'mbb_linear')
LAYER_KINDS = MBB_KINDS + ('float', )
#: Graph operations and the layer kind they need (None: no layer).
NODE_OPS = {
    'input': None,
    'mbb_conv2d': 'mbb_conv2d',
    'mbb_linear': 'mbb_linear',
    'conv2d': 'float',
    'batch_norm': 'float',
    'linear': 'float',
    'relu': None,
    'relu6': None,
    'add': None,
    'max_pool2d': None,
    'identity': None,
    'flatten': None,
}
#: Tensors every MBB layer has (the ``derived`` one is recomputed from the
#: words by the reader and must agree).
MBB_TENSORS = ('weight_words', 'out_scale', 'out_bias', 'inv_step',
               'tap_weight_sums')
_DTYPES = ('float32', 'float64', 'int64', 'int32', 'uint8', 'bool')


#: The manifest's own digest: the sha256 of its canonical JSON without it.
MANIFEST_DIGEST = 'manifest_sha256'


class ExportFormatError(ValueError):
    """An export directory that is not a valid packed-model export."""


def sha256_of(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def file_entry(out_dir: str, name: str) -> dict:
    """The manifest's description of one written file."""
    path = osp.join(out_dir, name)
    return dict(path=name, bytes=osp.getsize(path), sha256=sha256_of(path))


def tensor_entry(key: str, array: np.ndarray, **extra) -> dict:
    """The manifest's description of one tensor."""
    return dict(key=key, dtype=str(array.dtype), shape=list(array.shape),
                **extra)


def save_tensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
    """Write arrays as one safetensors file (C order, little endian)."""
    from safetensors.numpy import save_file

    # (np.ascontiguousarray would make 0-dim arrays 1-dim)
    save_file({key: np.require(value, requirements='C')
               for key, value in tensors.items()}, path)


def load_tensors(path: str, what: str) -> Dict[str, np.ndarray]:
    """Read a safetensors file; a damaged one raises ExportFormatError."""
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as error:  # safetensors raises its own error types
        raise ExportFormatError(
            f'{what} {path} cannot be read as safetensors: {error}') from None


def canonical_json(manifest: dict) -> bytes:
    """The manifest without its digest as canonical JSON: keys sorted, no
    whitespace, ASCII (``json.dumps(sort_keys=True, separators=(',', ':'))``
    in Python), what :data:`MANIFEST_DIGEST` is the sha256 of."""
    body = {key: value for key, value in manifest.items()
            if key != MANIFEST_DIGEST}
    return json.dumps(body, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=True).encode('ascii')


def manifest_digest(manifest: dict) -> str:
    """Hex sha256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def write_manifest(out_dir: str, manifest: dict) -> None:
    """Write ``manifest.json`` (after the files it describes), with its
    digest (set in ``manifest`` too)."""
    validate_manifest(manifest)
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    with open(osp.join(out_dir, MANIFEST), 'w') as file:
        json.dump(manifest, file, indent=1, sort_keys=False)
        file.write('\n')


# ---- validation -------------------------------------------------------------

def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ExportFormatError(f'invalid manifest: {message}')


def _is_int(value, minimum: int) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and value >= minimum)


def _is_pair(value, minimum: int) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(_is_int(v, minimum) for v in value))


def _check_tensor_entries(layer: dict) -> None:
    name = layer['name']
    tensors = layer.get('tensors')
    _require(isinstance(tensors, dict), f'layer {name!r}: no tensors dict')
    for role, entry in tensors.items():
        _require(
            isinstance(entry, dict) and isinstance(entry.get('key'), str)
            and entry.get('dtype') in _DTYPES
            and isinstance(entry.get('shape'), list)
            and all(_is_int(s, 0) for s in entry['shape']),
            f'layer {name!r}, tensor {role!r}: needs key, dtype (one of '
            f'{_DTYPES}) and shape')


def mbb_weight_shape(attributes: dict) -> List[int]:
    """Shape of an MBB layer's weight words: (O, M, kh, kw, Wg)."""
    return [attributes['out_channels'], attributes['w_bits'],
            *attributes['kernel_size'],
            num_group_words(attributes['in_channels'], attributes['groups'])]


def _check_mbb_layer(layer: dict) -> None:
    name, attrs = layer['name'], layer.get('attributes', {})
    for key in ('in_channels', 'out_channels', 'groups'):
        _require(_is_int(attrs.get(key), 1), f'layer {name!r}: {key} must be '
                 f'an integer >= 1, got {attrs.get(key)!r}')
    for key in ('w_bits', 'a_bits'):
        value = attrs.get(key)
        _require(_is_int(value, MIN_BITS) and value <= MAX_BITS,
                 f'layer {name!r}: {key} must be an integer in '
                 f'{MIN_BITS}..{MAX_BITS}, got {value!r}')
    for key, minimum in (('kernel_size', 1), ('stride', 1), ('padding', 0),
                         ('dilation', 1)):
        _require(_is_pair(attrs.get(key), minimum), f'layer {name!r}: {key} '
                 f'must be 2 integers >= {minimum}, got {attrs.get(key)!r}')
    _require(attrs.get('mode') in ('signed', 'unsigned'),
             f"layer {name!r}: mode must be 'signed' or 'unsigned', got "
             f"{attrs.get('mode')!r}")
    inv_step = attrs.get('inv_step')
    _require(
        isinstance(inv_step, float) and math.isfinite(inv_step)
        and inv_step > 0 and float(np.float32(inv_step)) == inv_step,
        f'layer {name!r}: inv_step must be a finite float32 value > 0, got '
        f'{inv_step!r}')
    groups = attrs['groups']
    _require(attrs['in_channels'] % groups == 0
             and attrs['out_channels'] % groups == 0,
             f'layer {name!r}: channels must be divisible by groups')
    bound = accumulator_bound(attrs['in_channels'] // groups,
                              attrs['kernel_size'], attrs['w_bits'],
                              attrs['a_bits'])
    _require(bound < ACC_LIMIT, f'layer {name!r}: the accumulator bound '
             f'{bound} does not fit int32')
    out = attrs['out_channels']
    expected = dict(weight_words=('int64', mbb_weight_shape(attrs)),
                    out_scale=('float32', [out]),
                    out_bias=('float32', [out]),
                    inv_step=('float32', []),
                    tap_weight_sums=('int32',
                                     [out, *attrs['kernel_size']]))
    tensors = layer['tensors']
    for role, (dtype, shape) in expected.items():
        entry = tensors.get(role)
        _require(entry is not None, f'layer {name!r}: no {role!r} tensor')
        _require(entry['dtype'] == dtype and entry['shape'] == shape,
                 f'layer {name!r}: {role} must be {dtype} {shape}, the '
                 f"manifest says {entry['dtype']} {entry['shape']}")


def _check_graph(manifest: dict, layers: Dict[str, dict]) -> None:
    graph = manifest.get('graph')
    _require(isinstance(graph, dict), 'no graph')
    nodes = graph.get('nodes')
    _require(isinstance(nodes, list) and nodes, 'graph.nodes must be a '
             'non-empty list')
    defined = set()
    for node in nodes:
        _require(isinstance(node, dict) and isinstance(node.get('name'), str),
                 f'graph node without a name: {node!r}')
        name, op = node['name'], node.get('op')
        _require(name not in defined, f'node {name!r} is defined twice')
        _require(op in NODE_OPS, f'node {name!r}: unknown op {op!r} (known: '
                 f'{sorted(NODE_OPS)})')
        inputs = node.get('inputs')
        _require(isinstance(inputs, list), f'node {name!r}: inputs must be '
                 'a list')
        for value in inputs:
            _require(value in defined, f'node {name!r} reads {value!r}, '
                     'which no earlier node defines')
        arity = {'input': 0, 'add': 2}.get(op, 1)
        _require(len(inputs) == arity, f'node {name!r}: {op} takes {arity} '
                 f'inputs, got {len(inputs)}')
        kind = NODE_OPS[op]
        if kind is not None:
            layer = layers.get(node.get('layer'))
            _require(layer is not None and layer['kind'] == kind,
                     f"node {name!r}: {op} needs a {kind} layer, got "
                     f"{node.get('layer')!r}")
        _require(isinstance(node.get('attributes', {}), dict),
                 f'node {name!r}: attributes must be a dict')
        defined.add(name)
    outputs = graph.get('outputs')
    _require(isinstance(outputs, list) and outputs, 'graph.outputs must be '
             'a non-empty list')
    for value in outputs:
        _require(value in defined, f'graph output {value!r} is not a node')


def validate_manifest(manifest: dict) -> None:
    """Check a manifest's structure (not the tensor bytes).

    Raises:
        ExportFormatError: naming the first problem found.
    """
    _require(isinstance(manifest, dict), 'not a JSON object')
    _require(manifest.get('format') == FORMAT_NAME,
             f"format must be {FORMAT_NAME!r}, got {manifest.get('format')!r}")
    version = manifest.get('version')
    _require(version == FORMAT_VERSION,
             f'version {version!r} is not supported (this reader reads '
             f'version {FORMAT_VERSION})')
    files = manifest.get('files')
    _require(isinstance(files, dict) and 'model' in files,
             'files.model is missing')
    for role, entry in files.items():
        _require(
            isinstance(entry, dict) and isinstance(entry.get('path'), str)
            and osp.basename(entry['path']) == entry['path']
            and _is_int(entry.get('bytes'), 0)
            and isinstance(entry.get('sha256'), str)
            and len(entry['sha256']) == 64,
            f'files.{role} needs a plain file name, bytes and sha256')
    layers = manifest.get('layers')
    _require(isinstance(layers, list), 'layers must be a list')
    by_name = {}
    for layer in layers:
        _require(isinstance(layer, dict) and isinstance(layer.get('name'),
                                                        str),
                 f'layer without a name: {layer!r}')
        name = layer['name']
        _require(name not in by_name, f'layer {name!r} appears twice')
        _require(layer.get('kind') in LAYER_KINDS, f'layer {name!r}: kind '
                 f"must be one of {LAYER_KINDS}, got {layer.get('kind')!r}")
        _check_tensor_entries(layer)
        if layer['kind'] in MBB_KINDS:
            _check_mbb_layer(layer)
        by_name[name] = layer
    keys = [entry['key'] for layer in layers
            for entry in layer['tensors'].values()]
    _require(len(keys) == len(set(keys)), 'a tensor key is used twice')
    _check_graph(manifest, by_name)


# ---- reading ----------------------------------------------------------------

class PackedExport:
    """A validated export directory: its manifest and its tensors.

    Args:
        out_dir (str): the export directory.
        manifest (dict): the parsed ``manifest.json``.
        tensors (dict): key -> np.ndarray from ``model.safetensors``.
    """

    def __init__(self, out_dir: str, manifest: dict,
                 tensors: Dict[str, np.ndarray]) -> None:
        self.out_dir = out_dir
        self.manifest = manifest
        self.tensors = tensors
        self.layers = {layer['name']: layer for layer in manifest['layers']}
        self.nodes = manifest['graph']['nodes']

    def layer_tensor(self, layer: str, role: str) -> np.ndarray:
        """One tensor of a layer, e.g. ``('layer1.0.conv1',
        'weight_words')``."""
        return self.tensors[self.layers[layer]['tensors'][role]['key']]

    def layer_arrays(self, layer: str) -> Dict[str, np.ndarray]:
        """All tensors of a layer, by role."""
        return {role: self.tensors[entry['key']]
                for role, entry in self.layers[layer]['tensors'].items()}

    def state_dict_arrays(self) -> Dict[str, np.ndarray]:
        """The tensors of the exported part's state dict (derived tensors
        left out), by state-dict key."""
        return {entry['key']: self.tensors[entry['key']]
                for layer in self.manifest['layers']
                for entry in layer['tensors'].values()
                if not entry.get('derived')}

    def file_path(self, role: str) -> Optional[str]:
        """Path of a listed file (``'vectors'``, ``'onnx_plain'``, ...), or
        None when the export has none."""
        entry = self.manifest['files'].get(role)
        return osp.join(self.out_dir, entry['path']) if entry else None

    def load_vectors(self) -> Dict[str, np.ndarray]:
        """The test vectors, checked against their sha256."""
        if 'vectors' not in self.manifest['files']:
            raise ExportFormatError(
                f'{self.out_dir} has no test vectors; export with --vectors N')
        path = _checked_file(self.out_dir, self.manifest, 'vectors')
        return load_tensors(path, 'vectors file')


def _checked_file(out_dir: str, manifest: dict, role: str) -> str:
    entry = manifest['files'][role]
    path = osp.join(out_dir, entry['path'])
    if not osp.isfile(path):
        raise ExportFormatError(f'{path} (files.{role}) is missing')
    size = osp.getsize(path)
    if size != entry['bytes']:
        raise ExportFormatError(
            f'{path} has {size} bytes, the manifest says {entry["bytes"]}: '
            'the file is truncated or was replaced')
    digest = sha256_of(path)
    if digest != entry['sha256']:
        raise ExportFormatError(
            f'{path}: sha256 {digest} does not match the manifest '
            f'({entry["sha256"]}): the file is corrupted or was replaced')
    return path


def read_export(out_dir: str) -> PackedExport:
    """Read and validate an export directory.

    Checks the manifest's structure, every listed file's size and sha256
    (tensors, resources, vectors, ONNX graphs), every tensor's presence,
    dtype and shape (the MBB layers' geometry against the shapes of their
    stored tensors), the MBB layers' pad bits and derived tap weight sums,
    and last the manifest's own digest: an edit of any field (a stride, a
    padding, a mode, ...) is refused.

    Raises:
        ExportFormatError: naming the file, layer or field at fault.
    """
    path = osp.join(out_dir, MANIFEST)
    if not osp.isfile(path):
        raise ExportFormatError(f'{path} not found: not an export directory')
    try:
        with open(path) as file:
            manifest = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportFormatError(f'{path} is not valid JSON: {error}') from None
    validate_manifest(manifest)
    tensors = load_tensors(_checked_file(out_dir, manifest, 'model'),
                           'tensor file')
    listed = set()
    for layer in manifest['layers']:
        for role, entry in layer['tensors'].items():
            key = entry['key']
            listed.add(key)
            if key not in tensors:
                raise ExportFormatError(
                    f"layer {layer['name']!r}: tensor {key!r} is not in "
                    f'{MODEL_FILE}')
            array = tensors[key]
            if str(array.dtype) != entry['dtype'] or list(
                    array.shape) != entry['shape']:
                raise ExportFormatError(
                    f'tensor {key!r} is {array.dtype} {list(array.shape)}, '
                    f"the manifest says {entry['dtype']} {entry['shape']}")
    extra = sorted(set(tensors) - listed)
    if extra:
        raise ExportFormatError(f'{MODEL_FILE} holds tensors no layer lists: '
                                f'{extra[:5]}')
    export = PackedExport(out_dir, manifest, tensors)
    for layer in manifest['layers']:
        if layer['kind'] in MBB_KINDS:
            _check_mbb_tensors(export, layer)
    for role in manifest['files']:
        if role != 'model':
            _checked_file(out_dir, manifest, role)
    _check_manifest_digest(path, manifest)
    return export


def _check_manifest_digest(path: str, manifest: dict) -> None:
    saved = manifest.get(MANIFEST_DIGEST)
    if not isinstance(saved, str):
        raise ExportFormatError(
            f'{path} has no {MANIFEST_DIGEST}: it was not written by this '
            'exporter, or before exports were self-checking; export again')
    if saved != manifest_digest(manifest):
        raise ExportFormatError(
            f'{path} was changed after it was written: its {MANIFEST_DIGEST} '
            'does not match its contents (a field edited by hand, or a '
            'damaged file); export again')


def _check_mbb_tensors(export: PackedExport, layer: dict) -> None:
    name, attrs = layer['name'], layer['attributes']
    arrays = export.layer_arrays(name)
    words = arrays['weight_words']
    if not check_pad_bits(words, attrs['in_channels'], attrs['groups']):
        raise ExportFormatError(f'layer {name!r}: weight words have non-zero '
                                'pad bits')
    if float(arrays['inv_step']) != attrs['inv_step']:
        raise ExportFormatError(
            f'layer {name!r}: inv_step tensor {float(arrays["inv_step"])!r} '
            f"differs from the attribute {attrs['inv_step']!r}")
    sums = tap_weight_sums(words, attrs['in_channels'], attrs['w_bits'],
                           attrs['groups'])
    if not np.array_equal(sums, arrays['tap_weight_sums']):
        raise ExportFormatError(f'layer {name!r}: tap_weight_sums do not '
                                'match the weight words')


def remove_stale_export_files(out_dir: str, manifest: dict) -> None:
    """Remove the files of an earlier export that ``manifest`` does not
    list (only names an export writes), so none is left stale."""
    listed = {entry['path'] for entry in manifest['files'].values()}
    for name in EXPORT_FILES:
        path = osp.join(out_dir, name)
        if name != MANIFEST and name not in listed and osp.isfile(path):
            os.remove(path)


def clear_export_files(out_dir: str) -> None:
    """Remove the files an earlier export wrote (only those names), so a
    forced export leaves no stale file; other files stay."""
    for name in EXPORT_FILES:
        path = osp.join(out_dir, name)
        if osp.isfile(path):
            os.remove(path)
