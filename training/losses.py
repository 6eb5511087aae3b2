"""Losses as pure functions, and the global token mean that makes them independent of how a step is split.

An optimizer step's loss is the mean over every label token of the step: all its micro-batches on all
ranks. Each micro-batch contributes `sum of its token losses * backward_scale(...)`: DeepSpeed divides
by the accumulation steps and averages gradients over ranks, and the scale undoes both and divides by the
step's total label tokens, so the accumulated gradient is that of one batch holding every token, however
unequal the micro-batches (a per-micro-batch mean would weight a 10-token micro-batch like a 1,000-token one).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.collator import IGNORE_INDEX


def label_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry a loss: labels shifted by one (token t predicts t + 1), ignored ones left out."""
    return int((labels[..., 1:] != IGNORE_INDEX).sum())


def lm_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum (not mean) of the next-token cross-entropies of the label tokens, in float32."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[..., :-1, :].reshape(-1, vocab).float(), labels[..., 1:].reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def lm_batch_loss_sum(model, batch: dict) -> torch.Tensor:
    """The LM loss sum of one micro-batch of model inputs with `labels` (the model computes no loss itself).

    Only the positions that predict a label token go through the LM head (`logits_to_keep` as a mask): the
    sum is lm_loss_sum's, without the vocabulary projection of every prompt and image position.
    """
    labels = batch["labels"]
    targets = labels[..., 1:]
    predicts = targets != IGNORE_INDEX
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[..., :-1] = predicts
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float(), targets[predicts], reduction="sum")


def batch_label_tokens(batch: dict) -> int:
    return label_tokens(batch["labels"])


def backward_scale(step_label_tokens: int, grad_accum: int, world_size: int) -> float:
    """Factor on a micro-batch's loss sum before DeepSpeed's backward (which divides by `grad_accum` and
    averages over `world_size` ranks) so that the step's gradient is that of the global token mean."""
    if step_label_tokens <= 0:
        raise ValueError("the optimizer step has no label token on any rank: nothing to learn from "
                         "(do the samples carry an assistant answer?)")
    return grad_accum * world_size / step_label_tokens


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over all ranks (one collective); the values themselves without a process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
