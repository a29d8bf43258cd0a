# Copyright (c) mmbinary contributors. All rights reserved.
"""``OscillationDampeningHook``: a loss that pulls the latent weights of
the MBB layers towards their quantization levels, weighted up over the
training.

With the straight-through estimator a latent weight near a decision level
keeps crossing it: its code flips back and forth from step to step and the
batch norms average over networks that no longer exist. The {-1, +1}
encoding has no zero code, so every weight near 0 sits on a decision level
(-1 / +1) and low-bit MBB layers are prone to it. Oscillation dampening
(Nagel et al., "Overcoming Oscillations in Quantization-Aware Training",
ICML 2022) adds

    L_dampening = lambda(t) * sum_layers sum_o mean_k (sg(w_q) - clip(w))^2

(``sg``: no gradient; ``w_q`` the dequantized weight, ``clip(w)`` the latent
weight clipped to the quantizer's range; per output channel ``o`` the mean
over its ``k`` weights) to the training loss, with ``lambda`` rising from
``start_weight`` to ``final_weight`` on a cosine over the training, so that
the weights move freely first and settle on their levels at the end.
"""
import math
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from mmbinary.quant.functions import num_levels, weight_codes
from mmbinary.registry import HOOKS

#: The key of the term in the loss dict (and in the training log).
LOSS_KEY = 'loss_dampening'


def dampened_layers(model: nn.Module) -> List[nn.Module]:
    """The MBB layers (conv and linear) of ``model`` whose weights train."""
    return [m for m in model.modules()
            if hasattr(m, 'weight_quantizer')
            and isinstance(getattr(m, 'weight', None), Tensor)
            and m.weight.requires_grad]


def dampening_loss(layers: List[nn.Module]) -> Tensor:
    """``sum_layers sum_o mean_k (sg(w_q) - clip(w))^2`` (unweighted).

    Args:
        layers (list[nn.Module]): MBB layers (:func:`dampened_layers`).

    Returns:
        Tensor: 0-dim, differentiable in the latent weights.
    """
    total = None
    for layer in layers:
        weight = layer.weight
        quantizer = layer.weight_quantizer
        alpha = quantizer.alpha(weight)  # (O, 1, ...), detached
        codes = weight_codes(weight, 1.0 / alpha, quantizer.bits)
        target = codes.to(weight.dtype) * (alpha / num_levels(quantizer.bits))
        clipped = torch.maximum(torch.minimum(weight, alpha), -alpha)
        term = (target - clipped).pow(2).reshape(weight.shape[0], -1)
        term = term.mean(1).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError('dampening_loss: no MBB layer with a weight that '
                         'trains')
    return total


def cosine_ramp(progress: float, start: float, final: float) -> float:
    """``start`` at ``progress`` 0 to ``final`` at 1 on a half cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return final + (start - final) * (1 + math.cos(math.pi * progress)) / 2


@HOOKS.register_module()
class OscillationDampeningHook(Hook):
    """Add the oscillation-dampening loss (:func:`dampening_loss`) of the
    model's MBB layers to every training loss, logged as
    ``loss_dampening``::

        custom_hooks = [dict(type='mmbinary.OscillationDampeningHook',
                             final_weight=0.1)]

    The weight rises from ``start_weight`` to ``final_weight`` on a half
    cosine over the training iterations. The term is part of the loss (a
    loss scaler or gradient accumulation treat it as the rest). A
    distiller's teacher has no MBB layer that trains, so only the student
    is pulled.

    Args:
        final_weight (float): ``lambda`` at the end, > 0.
        start_weight (float): ``lambda`` at the start, 0 <= start <= final.
    """

    priority = 'NORMAL'

    def __init__(self, final_weight: float = 0.1,
                 start_weight: float = 0.0) -> None:
        for name, value in (('final_weight', final_weight),
                            ('start_weight', start_weight)):
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, got '
                                 f'{value!r}')
        if not final_weight > 0:
            raise ValueError(f'final_weight must be > 0, got {final_weight}')
        if not 0 <= start_weight <= final_weight:
            raise ValueError('start_weight must be in [0, final_weight='
                             f'{final_weight}], got {start_weight}')
        self.final_weight = float(final_weight)
        self.start_weight = float(start_weight)
        self.weight = self.start_weight
        self._model: Optional[nn.Module] = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        layers = dampened_layers(model)
        if not layers:
            raise ValueError('OscillationDampeningHook: the model has no MBB '
                             'layer whose weight trains (nothing to dampen)')
        original = model.parse_losses

        def parse_losses(losses: Dict[str, Tensor]):
            losses = dict(losses)
            losses[LOSS_KEY] = self.weight * dampening_loss(layers)
            return original(losses)

        model.parse_losses = parse_losses  # this model, this training
        self._model = model
        runner.logger.info(f'OscillationDampeningHook: {len(layers)} MBB '
                           f'layers, weight {self.start_weight} -> '
                           f'{self.final_weight}')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        progress = runner.iter / max(runner.max_iters - 1, 1)
        self.weight = cosine_ramp(progress, self.start_weight,
                                  self.final_weight)

    def after_train(self, runner) -> None:
        if self._model is not None:
            # back to the class's parse_losses
            self._model.__dict__.pop('parse_losses', None)
            self._model = None
