import pytest
import torch
from PIL import Image

from data.collator import collate_packed
from model.parts import set_trainable

STAGE_PARTS = {
    "stage1_projector_warmup": {"projector"},
    "stage2_vl_alignment": {"vit", "projector"},
    "stage3_multimodal": {"vit", "projector", "llm"},
    "projector_and_llm": {"projector", "llm"},
}


def _batch(encoder, tokenizer):
    images = [Image.new("RGB", (112, 112), (200, 30, 30)), Image.new("RGB", (140, 112), (30, 30, 200))]
    messages = [
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "image", "image": "b.png"},
                                      {"type": "text", "text": "Which image is red?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<think>\n</think>\nThe first one."}]},
    ]
    sample = encoder.encode("s0", messages, images)
    return collate_packed([[sample]], len(sample), tokenizer.pad_token_id)


@pytest.mark.parametrize("stage", sorted(STAGE_PARTS))
def test_step_changes_trainable_and_keeps_frozen_bit_identical(stage, tiny_model, encoder, tokenizer):
    counts = set_trainable(tiny_model, STAGE_PARTS[stage])
    for part, c in counts.items():
        assert (c["trainable"] > 0) == (part in STAGE_PARTS[stage])
        assert (c["frozen"] > 0) == (part not in STAGE_PARTS[stage])
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    loss = tiny_model(**_batch(encoder, tokenizer)).loss
    loss.backward()
    optimizer.step()
    for name, param in tiny_model.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"{name} is trainable but did not change"
        else:
            assert torch.equal(param, before[name]), f"{name} is frozen but changed"
            assert param.grad is None


def test_vit_excludes_the_projector(tiny_model):
    set_trainable(tiny_model, {"vit"})
    assert all(not p.requires_grad for p in tiny_model.model.visual.merger.parameters())
    assert all(p.requires_grad for p in tiny_model.model.visual.blocks.parameters())


def test_unknown_part_is_an_error(tiny_model):
    with pytest.raises(ValueError, match="unknown trainable part"):
        set_trainable(tiny_model, {"vision"})
