"""What the store keeps per image, computed from a batch of logits."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.results.store import BatchScores

__all__ = ["scores_from_logits"]


def scores_from_logits(
    rows: np.ndarray,
    labels: torch.Tensor,
    logits: torch.Tensor,
    maps: torch.Tensor | None = None,
    embeddings: torch.Tensor | None = None,
    properties: np.ndarray | None = None,
) -> BatchScores:
    """Softmax, predicted and runner-up class, true-class probability and loss, in float32
    (``properties``, measured from the pixels, are passed through)."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    probs = log_probs.exp()
    top = probs.topk(min(2, probs.shape[1]), dim=1)
    true_log_prob = log_probs.gather(1, labels.long()[:, None])[:, 0]
    return BatchScores(
        rows=np.asarray(rows, dtype=np.int64),
        pred=top.indices[:, 0].int().numpy(),
        confidence=top.values[:, 0].numpy(),
        true_prob=true_log_prob.exp().numpy(),
        loss=(-true_log_prob).numpy(),
        runner_up=top.indices[:, -1].int().numpy(),
        runner_up_prob=top.values[:, -1].numpy(),
        probs=probs.half().numpy(),
        maps=None if maps is None else maps.half().cpu().numpy(),
        embeddings=None if embeddings is None else embeddings.half().cpu().numpy(),
        properties=properties,
    )
