# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 8: an export is tamper-evident. Any edit of the manifest (a
layer's stride, padding, mode, a_bits, ...) and any change of a listed file
(ONNX graphs, resources, vectors) is refused on read; a failed export
leaves the earlier one intact."""
import json
import os
import os.path as osp
import shutil

import pytest
import torch
from torch import nn

from mmbinary.models import MBBConv2d
from mmbinary.models.packing import convert_to_packed

pytest.importorskip('safetensors')
pytest.importorskip('onnx')

from mmbinary.export.exporter import export_packed  # noqa: E402
from mmbinary.export.format import (MANIFEST, ExportFormatError,  # noqa: E402
                                    read_export)


def tiny_packed():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        MBBConv2d(8, 8, 3, padding=1, a_bits=2, a_mode='unsigned'),
        nn.BatchNorm2d(8), nn.ReLU(),
        MBBConv2d(8, 4, 3, stride=2, padding=1, w_bits=3, a_bits=2))
    model.train()
    model(torch.randn(4, 3, 8, 8))
    return convert_to_packed(model.eval())


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('export') / 'export')
    export_packed(tiny_packed(), [torch.randn(1, 3, 8, 8)], out_dir,
                  vectors=1, onnx=True)
    return out_dir


def edited(out_dir, tmp_path, edit):
    copy = str(tmp_path / 'copy')
    shutil.copytree(out_dir, copy)
    path = osp.join(copy, MANIFEST)
    with open(path) as file:
        manifest = json.load(file)
    edit(manifest)
    with open(path, 'w') as file:
        json.dump(manifest, file, indent=1)
    return copy


def mbb_layer(manifest, name='3'):
    return next(layer for layer in manifest['layers']
                if layer['name'] == name)['attributes']


@pytest.mark.parametrize('edit', [
    lambda m: mbb_layer(m).update(stride=[2, 2]),
    lambda m: mbb_layer(m).update(padding=[0, 0]),
    lambda m: mbb_layer(m).update(dilation=[2, 2]),
    lambda m: mbb_layer(m).update(mode='signed'),
    lambda m: mbb_layer(m).update(a_bits=3),
    lambda m: m['packed_layout']['layers']['6']['config'].update(
        stride=[1, 1]),
    lambda m: m['source'].update(checkpoint='other.pth'),
], ids=['stride', 'padding', 'dilation', 'mode', 'a_bits', 'layout',
        'provenance'])
def test_an_edited_manifest_is_refused(exported, tmp_path, edit):
    read_export(exported)  # the export itself reads
    copy = edited(exported, tmp_path, edit)
    with pytest.raises(ExportFormatError, match='manifest_sha256'):
        read_export(copy)


def test_a_manifest_without_its_digest_is_refused(exported, tmp_path):
    copy = edited(exported, tmp_path, lambda m: m.pop('manifest_sha256'))
    with pytest.raises(ExportFormatError, match='no manifest_sha256'):
        read_export(copy)


@pytest.mark.parametrize('role', ['onnx_custom', 'onnx_plain', 'resources',
                                  'vectors'])
def test_every_listed_file_is_checked_on_read(exported, tmp_path, role):
    copy = str(tmp_path / 'copy')
    shutil.copytree(exported, copy)
    export = read_export(copy)
    path = export.file_path(role)
    data = bytearray(open(path, 'rb').read())
    data[len(data) // 2] ^= 0x01
    open(path, 'wb').write(bytes(data))
    with pytest.raises(ExportFormatError,
                       match=f'{osp.basename(path)}.*does not match'):
        read_export(copy)


def test_a_failed_export_leaves_the_earlier_one(exported, tmp_path,
                                                monkeypatch):
    copy = str(tmp_path / 'copy')
    shutil.copytree(exported, copy)
    before = {name: open(osp.join(copy, name), 'rb').read()
              for name in os.listdir(copy)}
    import onnx

    def full_disk(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    # the last file of an export fails: nothing of the new one appears
    monkeypatch.setattr(onnx, 'save_model', full_disk)
    with pytest.raises(OSError, match='No space'):
        export_packed(tiny_packed(), [torch.randn(1, 3, 8, 8)], copy,
                      vectors=2, seed=5, onnx=True)
    after = {name: open(osp.join(copy, name), 'rb').read()
             for name in os.listdir(copy)}
    assert after == before
    read_export(copy)
