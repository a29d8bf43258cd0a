# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 2: an empty batch gives an empty output from the MBB layers, in
train and eval mode, and initializes nothing."""
import pytest
import torch

from mmbinary.models import MBBConv2d, MBBLinear
from mmbinary.quant import ActivationQuantizer


def make(kind: str, a_mode: str):
    torch.manual_seed(0)
    if kind == 'conv':
        return (MBBConv2d(8, 6, 3, padding=1, a_mode=a_mode),
                torch.randn(0, 8, 7, 7), (0, 6, 7, 7), torch.randn(2, 8, 7, 7))
    return (MBBLinear(8, 6, a_mode=a_mode), torch.randn(0, 8), (0, 6),
            torch.randn(3, 8))


@pytest.mark.parametrize('kind', ['conv', 'linear'])
@pytest.mark.parametrize('a_mode', ['auto', 'signed', 'unsigned'])
@pytest.mark.parametrize('training', [True, False])
def test_empty_batch_gives_an_empty_output_and_initializes_nothing(
        kind, a_mode, training):
    layer, empty, shape, batch = make(kind, a_mode)
    layer.train(training)
    before = {key: value.clone() for key, value in layer.state_dict().items()}
    empty.requires_grad_(True)
    out = layer(empty)
    assert out.shape == shape
    out.sum().backward()  # the graph holds: gradients of the right shapes
    assert empty.grad.shape == empty.shape
    assert layer.weight.grad.shape == layer.weight.shape
    after = layer.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert not bool(layer.act_quantizer.initialized)
    # The first real batch initializes it as it would a fresh layer.
    fresh, _, _, _ = make(kind, a_mode)
    fresh.train(training)
    layer.weight.grad = None
    with torch.no_grad():
        torch.testing.assert_close(layer(batch), fresh(batch))
    assert torch.equal(layer.act_quantizer.clip.detach(),
                       fresh.act_quantizer.clip.detach())
    assert int(layer.act_quantizer.signed) == int(fresh.act_quantizer.signed)


def test_empty_batch_after_initialization_keeps_the_clip():
    layer, empty, shape, batch = make('conv', 'auto')
    layer(batch)
    clip = layer.act_quantizer.clip.detach().clone()
    assert layer(empty).shape == shape
    assert torch.equal(layer.act_quantizer.clip.detach(), clip)


def _first_batch_in_process(rank: int, port: int, queue) -> None:
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        quantizer = ActivationQuantizer(2)
        # rank 0 sees data, rank 1 an empty batch: no deadlock, and both
        # take the clip of the one that fitted one
        batch = torch.randn(2, 4, 3, 3) if rank == 0 else torch.randn(0, 4,
                                                                      3, 3)
        quantizer(batch)
        queue.put((rank, float(quantizer.clip.detach()),
                   int(quantizer.signed), bool(quantizer.initialized)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_an_empty_first_batch_on_one_process_takes_the_others_clip():
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    context = mp.get_context('spawn')
    queue = context.SimpleQueue()
    mp.start_processes(_first_batch_in_process, args=(port, queue),
                       nprocs=2, start_method='spawn')
    results = dict((rank, rest) for rank, *rest in
                   (queue.get() for _ in range(2)))
    torch.manual_seed(0)
    alone = ActivationQuantizer(2)
    alone(torch.randn(2, 4, 3, 3))
    expected = [float(alone.clip.detach()), 1, True]
    assert results[0] == expected and results[1] == expected
