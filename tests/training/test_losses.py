"""The LM loss as a pure function: sums, token counts and the scale that turns accumulated micro-batches
into the gradient of one batch (plain PyTorch here; tests/training/test_engine.py runs it under DeepSpeed)."""
from __future__ import annotations

import pytest
import torch

from data.collator import IGNORE_INDEX
from training.losses import backward_scale, label_tokens, lm_loss_sum

VOCAB = 11


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, VOCAB)

    def forward(self, ids):
        return self.head(torch.tanh(self.embed(ids)))


def batch(seq_len: int, labelled: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (1, seq_len), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, seq_len - labelled:] = ids[0, seq_len - labelled:]
    return ids, labels


def test_sum_and_count_match_torch_mean_cross_entropy():
    ids, labels = batch(12, 7, seed=1)
    logits = TinyLM()(ids)
    mean = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE_INDEX)
    assert label_tokens(labels) == 7   # positions 5..11, each predicted by the token before it
    assert (lm_loss_sum(logits, labels) / label_tokens(labels)).item() == pytest.approx(mean.item(), abs=1e-6)


def test_accumulated_unequal_micro_batches_equal_one_batch():
    micro = [batch(16, 14, seed=2), batch(16, 2, seed=3)]
    model = TinyLM()
    total = sum(label_tokens(labels) for _, labels in micro)
    grad_accum = len(micro)
    for ids, labels in micro:
        # what DeepSpeed's backward does with the scaled loss: divide by the accumulation steps
        (lm_loss_sum(model(ids), labels) * backward_scale(total, grad_accum, 1) / grad_accum).backward()
    accumulated = [p.grad.clone() for p in model.parameters()]

    whole = TinyLM()
    ids = torch.cat([i for i, _ in micro])
    labels = torch.cat([lab for _, lab in micro])
    logits = whole(ids)
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                             ignore_index=IGNORE_INDEX)
    mean.backward()
    for a, b in zip(accumulated, (p.grad for p in whole.parameters())):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)

    naive = TinyLM()   # a mean per micro-batch weights the 2-token batch like the 14-token one
    for i, lab in micro:
        (lm_loss_sum(naive(i), lab) / label_tokens(lab) / grad_accum).backward()
    assert max(float((p.grad - a).abs().max()) for p, a in zip(naive.parameters(), accumulated)) > 1e-3


def test_a_step_without_label_tokens_is_an_error():
    with pytest.raises(ValueError, match="no label token"):
        backward_scale(0, 2, 2)
