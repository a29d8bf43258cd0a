# Copyright (c) mmbinary contributors. All rights reserved.
"""The tiny trained and packed RetinaNet the tool tests share."""
import pytest
import torch
from tiny_detector import RETINANET, TINY_CONFIG, build_model, make_tiny_coco


@pytest.fixture(scope='session')
def tiny(tmp_path_factory):
    """``dict(root, config, checkpoint, packed)``: the tiny config, its
    'trained' W2A2 checkpoint and the packed checkpoint of it."""
    from mmbinary.models.packing import (LAYOUT_KEY, convert_to_packed,
                                         packed_layout)
    root = tmp_path_factory.mktemp('tiny')
    make_tiny_coco(root / 'data')
    config = root / 'tiny_retinanet.py'
    config.write_text(TINY_CONFIG.format(
        base=RETINANET, data_root=str(root / 'data') + '/',
        ann_file=str(root / 'data' / 'ann.json')))
    model = build_model(str(config))
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model._forward(torch.randn(2, 3, 64, 64))
    model.eval()
    checkpoint = root / 'trained.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    convert_to_packed(model)
    packed = root / 'packed.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta={LAYOUT_KEY: packed_layout(model)}), packed)
    return dict(root=root, config=config, checkpoint=checkpoint,
                packed=packed)
