# Copyright (c) mmbinary contributors. All rights reserved.
import json
import os.path as osp

import numpy as np
import pytest
import torch

pytest.importorskip('safetensors')

from export_models import TinyNet, calibrate  # noqa: E402

from mmbinary.export.exporter import (ExportError, export_packed,  # noqa
                                      load_export_into)
from mmbinary.export.format import (MANIFEST, MODEL_FILE,  # noqa: E402
                                    ExportFormatError, read_export)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = calibrate(TinyNet(1), torch.randn(4, 3, 16, 16))
    out_dir = str(tmp_path_factory.mktemp('export'))
    export_packed(model, [torch.randn(1, 3, 16, 16)], out_dir)
    return model, out_dir


def copy_export(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


def test_round_trip_into_a_packed_model_is_identical(exported):
    model, out_dir = exported
    export = read_export(out_dir)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    torch.manual_seed(123)  # other float weights: everything must load
    rebuilt = load_export_into(TinyNet(1), out_dir)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)
    kinds = {layer['kind'] for layer in export.manifest['layers']}
    assert kinds == {'mbb_conv2d', 'float'}
    # every tensor of the state dict is there, bit for bit
    state = model.state_dict()
    arrays = export.state_dict_arrays()
    assert set(arrays) == {k for k, v in state.items()
                           if isinstance(v, torch.Tensor)}
    for key, array in arrays.items():
        assert torch.equal(torch.from_numpy(array), state[key]), key


def test_mbb_layer_entries_describe_the_op(exported):
    model, out_dir = exported
    export = read_export(out_dir)
    layer = export.layers['same']
    attrs = layer['attributes']
    assert attrs['mode'] == 'signed'
    assert attrs['inv_step'] == float(model.same.inv_step)
    assert attrs['kernel_size'] == [3, 3] and attrs['padding'] == [1, 1]
    assert layer['tensors']['tap_weight_sums']['derived'] is True
    words = export.layer_tensor('same', 'weight_words')
    assert words.dtype == np.int64
    assert words.shape == tuple(model.same.weight_words.shape)


def test_corrupted_or_truncated_tensor_file_is_rejected(exported, tmp_path):
    _, out_dir = exported
    flipped = copy_export(out_dir, tmp_path / 'flipped')
    path = osp.join(flipped, MODEL_FILE)
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0x01
    open(path, 'wb').write(bytes(data))
    with pytest.raises(ExportFormatError, match='sha256 .* does not match'):
        read_export(flipped)

    truncated = copy_export(out_dir, tmp_path / 'truncated')
    path = osp.join(truncated, MODEL_FILE)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-100])
    with pytest.raises(ExportFormatError, match='truncated'):
        read_export(truncated)


def edit_manifest(out_dir, tmp_path, name, edit):
    copy = copy_export(out_dir, tmp_path / name)
    path = osp.join(copy, MANIFEST)
    manifest = json.load(open(path))
    edit(manifest)
    json.dump(manifest, open(path, 'w'))
    return copy


def layer(manifest, name):
    return next(entry for entry in manifest['layers']
                if entry['name'] == name)


@pytest.mark.parametrize('edit, message', [
    (lambda m: m.update(version=2), 'version 2 is not supported'),
    (lambda m: m.update(format='other'), "format must be 'mmbinary-packed'"),
    (lambda m: layer(m, 'same')['attributes'].update(w_bits=9),
     'w_bits must be an integer in 1..8'),
    (lambda m: layer(m, 'same')['attributes'].update(mode='both'),
     "mode must be 'signed' or 'unsigned'"),
    (lambda m: layer(m, 'same')['attributes'].update(in_channels=1000),
     'weight_words must be int64'),
    (lambda m: layer(m, 'same')['tensors']['out_scale'].update(
        dtype='float64'), 'out_scale must be float32'),
    (lambda m: layer(m, 'same')['attributes'].update(inv_step=0.1),
     'inv_step must be a finite float32'),
    (lambda m: layer(m, 'same')['attributes'].update(inv_step=2.0),
     'inv_step tensor'),
    (lambda m: layer(m, 'stem')['tensors']['weight'].update(shape=[1]),
     "tensor 'stem.weight' is float32"),
    (lambda m: m['graph']['nodes'][1].update(op='gelu'), "unknown op 'gelu'"),
    (lambda m: m['graph']['nodes'][1].update(inputs=['nowhere']),
     "reads 'nowhere'"),
    (lambda m: m['files']['model'].update(path='../model.safetensors'),
     'plain file name'),
])
def test_edited_manifest_is_rejected(exported, tmp_path, edit, message):
    _, out_dir = exported
    copy = edit_manifest(out_dir, tmp_path, 'edited', edit)
    with pytest.raises(ExportFormatError, match=message):
        read_export(copy)


def test_weight_words_that_disagree_with_the_sums_are_rejected(
        exported, tmp_path):
    from mmbinary.export.format import file_entry, load_tensors, save_tensors
    _, out_dir = exported
    copy = copy_export(out_dir, tmp_path / 'words')
    path = osp.join(copy, MODEL_FILE)
    tensors = load_tensors(path, 'tensor file')
    tensors['same.weight_words'] = tensors['same.weight_words'] ^ 1
    save_tensors(path, tensors)
    manifest = json.load(open(osp.join(copy, MANIFEST)))
    manifest['files']['model'] = file_entry(copy, MODEL_FILE)
    json.dump(manifest, open(osp.join(copy, MANIFEST), 'w'))
    with pytest.raises(ExportFormatError, match='tap_weight_sums do not'):
        read_export(copy)


def test_not_an_export_and_invalid_json(tmp_path):
    with pytest.raises(ExportFormatError, match='not an export directory'):
        read_export(str(tmp_path))
    (tmp_path / MANIFEST).write_text('{"format": ')
    with pytest.raises(ExportFormatError, match='not valid JSON'):
        read_export(str(tmp_path))


def test_unsupported_module_is_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())
    with pytest.raises(ExportError, match='GELU is not supported'):
        export_packed(model.eval(), [torch.randn(1, 3, 8, 8)],
                      str(tmp_path))
