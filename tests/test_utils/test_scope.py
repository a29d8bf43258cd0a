# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary.utils.scope.load_tool_config: configs as the tools load them."""
import os.path as osp

import pytest

from mmbinary.utils.scope import load_tool_config

ENCODED = """
w_bits = 2
a_bits = 2
model = dict(
    type='RetinaNet',
    backbone=dict(type='mmbinary.MBBResNet', depth=18, w_bits=w_bits,
                  a_bits=a_bits),
    bbox_head=dict(conv_cfg=dict(type='MBBConv', w_bits=w_bits,
                                 a_bits=a_bits)))
"""


def test_missing_config_or_base_stops_with_its_name(tmp_path):
    with pytest.raises(SystemExit, match='config file not found: .*nope.py'):
        load_tool_config(str(tmp_path / 'nope.py'))
    config = tmp_path / 'child.py'
    config.write_text("_base_ = './gone.py'\n")
    with pytest.raises(SystemExit, match='gone.py'):
        load_tool_config(str(config))


def test_top_level_bits_in_options_set_every_part(tmp_path):
    config = tmp_path / 'encoded.py'
    config.write_text(ENCODED)
    cfg = load_tool_config(str(config), dict(w_bits=4, a_bits=3))
    assert (cfg.model.backbone.w_bits, cfg.model.backbone.a_bits) == (4, 3)
    conv_cfg = cfg.model.bbox_head.conv_cfg
    assert (conv_cfg.w_bits, conv_cfg.a_bits) == (4, 3)
    # one of them: the other keeps the config's value
    cfg = load_tool_config(str(config), dict(w_bits=8))
    assert (cfg.model.backbone.w_bits, cfg.model.backbone.a_bits) == (8, 2)
    # per-part options are left alone
    cfg = load_tool_config(str(config), {'model.backbone.w_bits': [4, 2]})
    assert cfg.model.backbone.w_bits == [4, 2]
    assert cfg.model.bbox_head.conv_cfg.w_bits == 2
    assert cfg.work_dir == osp.join('./work_dirs', 'encoded')


def test_bits_options_for_a_float_model_are_refused(tmp_path):
    config = tmp_path / 'float.py'
    config.write_text("model = dict(type='RetinaNet', "
                      "backbone=dict(type='ResNet', depth=18))\n")
    with pytest.raises(SystemExit, match='no encoded part'):
        load_tool_config(str(config), dict(w_bits=2, a_bits=2))
    with pytest.raises(SystemExit, match='no top-level a_bits'):
        load_tool_config(str(config), dict(w_bits=2))


def test_relative_checkpoint_found_next_to_the_config(tmp_path, monkeypatch):
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'float.pth').write_bytes(b'')
    config = tmp_path / 'configs' / 'run.py'
    config.write_text(ENCODED + "load_from = 'float.pth'\n")
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_tool_config(str(config))
    assert cfg.load_from == str(tmp_path / 'configs' / 'float.pth')
