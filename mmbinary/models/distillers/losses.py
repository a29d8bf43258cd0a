# Copyright (c) mmbinary contributors. All rights reserved.
"""Distillation losses between a student's and a teacher's recorded
outputs. Each takes two lists of tensors, one per recorded output (one per
FPN level, say), of equal shapes, and returns a 0-dim loss."""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbinary.registry import MODELS


def _check_pairs(student: List[Tensor], teacher: List[Tensor],
                 loss: str) -> None:
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f'{loss}: the student recorded {len(student)} outputs and the '
            f'teacher {len(teacher)}; they must be equal and non-zero')
    for index, (s, t) in enumerate(zip(student, teacher)):
        if s.shape != t.shape:
            raise ValueError(
                f'{loss}: output {index} of the student is '
                f'{tuple(s.shape)}, of the teacher {tuple(t.shape)}')


@MODELS.register_module()
class FeatureImitationLoss(nn.Module):
    """Mean squared error between student and teacher features, averaged
    over the recorded outputs (feature imitation of FPN levels).

    Args:
        loss_weight (float): multiplier of the loss. Default: 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: List[Tensor],
                preds_T: List[Tensor]) -> Tensor:
        """Lists of (N, C, H, W) features, one per level."""
        _check_pairs(preds_S, preds_T, type(self).__name__)
        losses = [
            F.mse_loss(s, t.detach()) for s, t in zip(preds_S, preds_T)
        ]
        return self.loss_weight * torch.stack(losses).mean()


@MODELS.register_module()
class SigmoidKLDivergence(nn.Module):
    """KL divergence between the teacher's and the student's per-element
    Bernoulli probabilities ``sigmoid(logit / tau)``, for heads that
    classify with sigmoids (RetinaNet's focal-loss logits).

    The sum over every element of every output is divided by the number of
    elements the teacher calls positive (probability > 0.5, at least 1),
    as focal loss is divided by the number of positive anchors: the many
    background anchors do not dilute the objects.

    Args:
        tau (float): temperature. Default: 1.0.
        loss_weight (float): multiplier of the loss. Default: 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f'tau must be > 0, got {tau!r}')
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: List[Tensor],
                preds_T: List[Tensor]) -> Tensor:
        """Lists of (N, A * classes, H, W) logits, one per level."""
        _check_pairs(preds_S, preds_T, type(self).__name__)
        total, positives = 0.0, 0.0
        for s, t in zip(preds_S, preds_T):
            s = s.float() / self.tau
            t = t.detach().float() / self.tau
            p_t = torch.sigmoid(t)
            # KL(Bern(p_t) || Bern(p_s)) with log-sigmoids for stability.
            kl = (p_t * (F.logsigmoid(t) - F.logsigmoid(s)) +
                  (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s)))
            total = total + kl.sum()
            positives = positives + (p_t > 0.5).sum()
        normalizer = torch.clamp(torch.as_tensor(positives).float(), min=1.0)
        return self.loss_weight * self.tau**2 * total / normalizer


@MODELS.register_module()
class ChannelWiseDivergence(nn.Module):
    """Channel-wise distillation of dense predictions (Shu et al., ICCV
    2021): each channel of the logits becomes a distribution over the
    spatial positions (softmax of ``logit / tau``), and the student's is
    pulled to the teacher's by the KL divergence, ``tau^2 * KL / (N * C)``
    summed over the channels (mmrazor's ``ChannelWiseDivergence``).

    Args:
        tau (float): temperature. Default: 1.0.
        loss_weight (float): multiplier of the loss. Default: 1.0.
    """

    def __init__(self, tau: float = 1.0, loss_weight: float = 1.0) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f'tau must be > 0, got {tau!r}')
        self.tau = float(tau)
        self.loss_weight = float(loss_weight)

    def forward(self, preds_S: List[Tensor],
                preds_T: List[Tensor]) -> Tensor:
        """Lists of (N, C, H, W) logits (a segmentor's: one)."""
        _check_pairs(preds_S, preds_T, type(self).__name__)
        losses = []
        for s, t in zip(preds_S, preds_T):
            n, c = s.shape[:2]
            s = s.float().reshape(n * c, -1) / self.tau
            t = t.detach().float().reshape(n * c, -1) / self.tau
            p_t = F.softmax(t, dim=1)
            kl = (p_t * (F.log_softmax(t, dim=1) -
                         F.log_softmax(s, dim=1))).sum()
            losses.append(self.tau**2 * kl / (n * c))
        return self.loss_weight * torch.stack(losses).mean()
