import pytest
import torch
from PIL import Image

from data.collator import IGNORE_INDEX, Packer, PlaceholderMismatch, collate_packed, mrope_positions

RED = (220, 30, 30)


def _messages(n_images, question, answer):
    content = [{"type": "image", "image": f"{i}.png"} for i in range(n_images)]
    return [
        {"role": "user", "content": content + [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def _samples(encoder, n):
    out = []
    for k in range(n):
        n_images = k % 3
        images = [Image.new("RGB", (112 + 28 * (i % 2), 112 + 28 * (k % 2)), RED) for i in range(n_images)]
        answer = "<think>\n</think>\n" + " ".join(["red"] * (k + 1))
        out.append(encoder.encode(f"s{k}", _messages(n_images, f"Question {k}: what colour?", answer), images))
    return out


def assert_packed_exactly_once(rows, samples, seq_len):
    """What packing guarantees: every sample lands in exactly one row, unchanged (same object, so the same
    ids, tokens and images), and no row holds more than seq_len tokens."""
    packed = [s for row in rows for s in row]
    assert sorted(s.sample_id for s in packed) == sorted(s.sample_id for s in samples)
    assert len({id(s) for s in packed}) == len(packed) and {id(s) for s in packed} == {id(s) for s in samples}
    assert all(sum(len(s) for s in row) <= seq_len for row in rows)


def test_labels_cover_exactly_the_assistant_turn(encoder, tokenizer):
    sample = _samples(encoder, 2)[1]
    labelled = sample.labels != IGNORE_INDEX
    text = tokenizer.decode(sample.input_ids[labelled])
    assert text == "<think>\n</think>\nred red<|im_end|>"
    assert sample.labels[0] == IGNORE_INDEX


def test_placeholders_match_image_grid(encoder, tiny_cfg):
    sample = _samples(encoder, 3)[2]  # two images of different sizes
    merge = tiny_cfg.processor.merge_size
    expected = sum(int(t * h * w) // merge**2 for t, h, w in sample.image_grid_thw.tolist())
    assert int((sample.input_ids == encoder.image_token_id).sum()) == expected
    assert sample.pixel_values.shape[0] == expected * merge**2


def test_reference_and_image_count_mismatch_is_a_clear_error(encoder):
    with pytest.raises(PlaceholderMismatch, match="sample bad: 2 image references .* but 1 images"):
        encoder.encode("bad", _messages(2, "q", "a"), [Image.new("RGB", (112, 112))])


def test_mrope_positions_equal_the_model_rope_index(encoder, tiny_model):
    for sample in _samples(encoder, 6):
        if sample.image_grid_thw is None:
            continue
        token_type = (sample.input_ids == encoder.image_token_id).int()[None]
        expected, _ = tiny_model.model.get_rope_index(sample.input_ids[None], token_type,
                                                      image_grid_thw=sample.image_grid_thw)
        assert torch.equal(expected[:, 0], sample.mrope_positions)


def test_packed_loss_equals_token_weighted_loss_one_by_one(encoder, tiny_model, tokenizer):
    """Equal losses prove packed samples do not attend to each other."""
    tiny_model.eval()
    samples = _samples(encoder, 7)
    seq_len = 256
    rows = list(Packer(seq_len=seq_len, buffer_size=64, min_fill=0.0).pack(samples))
    assert_packed_exactly_once(rows, samples, seq_len)
    assert len(rows) < len(samples)  # rows really hold several samples
    with torch.no_grad():
        packed = tiny_model(**collate_packed(rows, seq_len, tokenizer.pad_token_id)).loss.item()
        total, count = 0.0, 0
        for s in samples:
            mm_types = (s.input_ids == encoder.image_token_id).int()[None]
            kwargs = {"pixel_values": s.pixel_values, "image_grid_thw": s.image_grid_thw} if s.pixel_values is not None else {}
            loss = tiny_model(input_ids=s.input_ids[None], labels=s.labels[None], mm_token_type_ids=mm_types,
                              use_cache=False, **kwargs).loss.item()
            n = int((s.labels[1:] != IGNORE_INDEX).sum())
            total, count = total + loss * n, count + n
    assert packed == pytest.approx(total / count, abs=1e-5)


def test_packer_skips_and_counts_samples_longer_than_seq_len(encoder):
    samples = _samples(encoder, 5)
    longest = max(samples, key=len)
    packer = Packer(seq_len=len(longest) - 1, buffer_size=4, min_fill=0.5)
    rows = list(packer.pack(samples))
    packed_ids = {s.sample_id for r in rows for s in r}
    assert longest.sample_id not in packed_ids
    assert packer.stats.too_long == 1 and packer.stats.too_long_ids == [longest.sample_id]
    assert_packed_exactly_once(rows, [s for s in samples if s is not longest], packer.seq_len)


def test_mrope_positions_text_only():
    ids = torch.tensor([5, 6, 7])
    assert torch.equal(mrope_positions(ids, None, image_token_id=99, merge_size=2), torch.arange(3).expand(3, -1))



def _add_all(packer, samples):
    rows = []
    for sample in samples:
        packer.add(sample)
        while (row := packer.pop_row()) is not None:
            rows.append(row)
    return rows


def test_packer_emits_rows_once_full_and_flushes_the_rest(encoder):
    samples = _samples(encoder, 24)
    seq_len, min_fill = 128, 0.8
    packer = Packer(seq_len=seq_len, buffer_size=6, min_fill=min_fill)
    full = _add_all(packer, samples)
    assert full and all(sum(map(len, row)) >= min_fill * seq_len for row in full)
    held = list(packer.buffer)
    assert held  # emptier bins wait in the buffer for later samples
    packer.flush()
    rest = [packer.pop_row() for _ in range(len(packer.ready))]
    assert_packed_exactly_once(full + rest, [s for s in samples if len(s) <= seq_len], seq_len)
    assert {s.sample_id for row in rest for s in row} == {s.sample_id for s in held}
    collated = collate_packed(full + rest, seq_len, pad_token_id=0)
    for r, row in enumerate(full + rest):  # a row is its samples' tokens end to end, in the row's order
        tokens = torch.cat([s.input_ids for s in row])
        assert torch.equal(collated["input_ids"][r, : len(tokens)], tokens)


def test_restored_packer_continues_identically(encoder):
    samples = _samples(encoder, 24)
    first = Packer(seq_len=128, buffer_size=6, min_fill=0.8)
    added = 0
    while not (first.ready and first.buffer):  # packed rows not handed out yet, and samples still buffered
        first.add(samples[added])
        added += 1
    assert added < len(samples)
    second = Packer(seq_len=128, buffer_size=6, min_fill=0.8)
    second.restore([list(row) for row in first.ready], list(first.buffer), first.stats.counters())
    rows = [_add_all(packer, samples[added:]) for packer in (first, second)]
    assert [[s.sample_id for s in row] for row in rows[0]] == [[s.sample_id for s in row] for row in rows[1]]
    assert first.stats.counters() == second.stats.counters()


def test_the_batch_loss_keeps_only_label_positions_and_equals_the_full_logits_loss(encoder, tiny_model, tokenizer):
    """lm_batch_loss_sum projects only the positions that predict a label: same sum, same gradients as the
    loss over every position's logits."""
    from training.losses import lm_batch_loss_sum, lm_loss_sum

    rows = list(Packer(seq_len=256, buffer_size=64, min_fill=0.0).pack(_samples(encoder, 7)))
    batch = collate_packed(rows, 256, tokenizer.pad_token_id)
    sliced = lm_batch_loss_sum(tiny_model, batch)
    sliced.backward()
    sliced_grads = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad()
    full = lm_loss_sum(tiny_model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"])
    full.backward()
    assert sliced.item() == pytest.approx(full.item(), rel=1e-5)
    assert len(sliced_grads) == sum(1 for p in tiny_model.parameters() if p.grad is not None) > 0
    for name, p in tiny_model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(sliced_grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
