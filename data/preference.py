"""The preference-pair schema: a prompt, a preferred answer (chosen) and a worse one (rejected).

Stored form, one JSON record per line (the synthetic pairs, data/synth_pairs.py):

    {"id": "...", "source": "synthetic:colour",
     "prompt": [{"role": "user", "content": [{"type": "image", "image": "images/x.png"},
                                             {"type": "text", "text": "..."}]}],
     "chosen": "...", "rejected": "..."}

`prompt` is a conversation in chat form (data/schema.py) that ends with the user's turn; its image references
resolve like a sample's (relative to the file's folder, absolute, or s3://). `chosen` and `rejected` are the
assistant's answer texts.

The common public JSONL form is read too (PreferencePair.from_dict normalises it to the stored form):
- `prompt`: a string (one user turn) or a list of chat messages; a message's `content` is a string or a list
  of parts (null fields dropped), and an image part may leave out its reference (`{"type": "image"}`), which
  `images` fills in order.
- `chosen` / `rejected`: strings, or chat-message lists whose last message is the assistant's answer (as in
  Anthropic HH or UltraFeedback binarized). The messages before it are the prompt when `prompt` is absent;
  when `prompt` is given they must be empty or equal to it, and chosen's and rejected's must agree.
- optional `images` (references for the prompt's image placeholders; with no placeholder they go before the
  first user turn's text), `source` (default: the file's name) and `id` (default: <file name>:<line>).
Other keys (scores, prompt ids, ...) are ignored. An error names the file, line and field (SampleError).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from data.schema import Checker, Message, check_messages, json_record


@dataclass(frozen=True)
class PreferencePair:
    id: str
    prompt: list[Message]  # ends with the user's turn
    chosen: str
    rejected: str
    source: str  # "synthetic:<fact kind>", or the public file's name

    @classmethod
    def from_json(cls, line: str, *, file: str | None = None, line_no: int | None = None) -> PreferencePair:
        return cls.from_dict(json_record(line, file, line_no), file=file, line_no=line_no)

    @classmethod
    def from_dict(cls, record: Any, *, file: str | None = None, line_no: int | None = None) -> PreferencePair:
        """A pair from its stored form or the public form (module docstring)."""
        check = Checker(file, line_no)
        if not isinstance(record, dict):
            check.fail(None, f"expected a JSON object, got {'null' if record is None else type(record).__name__}")
        for key in ("chosen", "rejected"):
            if key not in record:
                check.fail(key, "missing")
        chosen, chosen_before = _answer(check, record["chosen"], "chosen")
        rejected, rejected_before = _answer(check, record["rejected"], "rejected")
        if chosen_before and rejected_before and chosen_before != rejected_before:
            check.fail("rejected", "its messages before the answer differ from chosen's (another conversation)")
        before, before_field = (chosen_before, "chosen") if chosen_before else (rejected_before, "rejected")
        if "prompt" in record:
            prompt, prompt_field = _prompt(check, record["prompt"]), "prompt"
            if before and before != prompt:
                check.fail(before_field, "its messages before the answer differ from prompt")
        elif before:
            prompt, prompt_field = before, before_field
        else:
            check.fail("prompt", "missing (and chosen holds no messages before its answer)")
        prompt = _fill_images(check, prompt, record.get("images"), prompt_field)
        check_messages(check, prompt, field=prompt_field)
        if prompt[-1]["role"] != "user":
            check.fail(f"{prompt_field}[{len(prompt) - 1}].role", "a prompt must end with the user's turn")
        if chosen == rejected:
            check.fail("rejected", "equals chosen: a pair needs two different answers")
        name = os.path.basename(file) if file else "record"
        source = record.get("source", name)
        check.non_empty_string(source, "source")
        pair_id = record.get("id", f"{name}:{line_no}" if line_no is not None else None)
        if pair_id is None:
            check.fail("id", "missing (and no file line to name the pair by)")
        if isinstance(pair_id, int) and not isinstance(pair_id, bool):
            pair_id = str(pair_id)
        check.non_empty_string(pair_id, "id")
        return cls(id=pair_id, prompt=prompt, chosen=chosen, rejected=rejected, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "prompt": self.prompt, "chosen": self.chosen,
                "rejected": self.rejected}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def image_refs(self) -> list[str]:
        """The prompt's image references in order of appearance."""
        return [part["image"] for message in self.prompt for part in message["content"] if part["type"] == "image"]

    def prompt_text(self) -> str:
        """The prompt's text parts, one per line (images left out)."""
        return "\n".join(part["text"] for message in self.prompt for part in message["content"]
                         if part["type"] == "text")

    def scored(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(prompt, chosen) and (prompt, rejected) as the text pairs rewards.preference's scorer takes; the
        Bradley-Terry loss is then bradley_terry_loss(score(chosen pairs), score(rejected pairs))."""
        prompt = self.prompt_text()
        return (prompt, self.chosen), (prompt, self.rejected)


def _content(message: Any) -> Any:
    """A message with string content as a message with one text part, it and its parts without null fields (HF
    data sets store every part with every field: {"type": "image", "text": null}); anything else as it is (the
    checks name what is wrong with it)."""
    if not isinstance(message, dict):
        return message
    message = {k: v for k, v in message.items() if v is not None}
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": [{"type": "text", "text": content}]}
    if isinstance(content, list):
        parts = [{k: v for k, v in part.items() if v is not None} if isinstance(part, dict) else part
                 for part in content]
        return {**message, "content": parts}
    return message


def _prompt(check: Checker, prompt: Any) -> list[Any]:
    if isinstance(prompt, str):
        check.non_empty_string(prompt, "prompt")
        return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    check.expect(prompt, list, "prompt", "a string or a list of chat messages")
    return [_content(message) for message in prompt]


def _answer(check: Checker, value: Any, field: str) -> tuple[str, list[Any]]:
    """(the answer text, the messages before it) of a `chosen` or `rejected` value."""
    if isinstance(value, str):
        check.non_empty_string(value, field)
        return value, []
    check.expect(value, list, field, "a string or a list of chat messages")
    if not value:
        check.fail(field, "expected at least one message")
    messages = [_content(message) for message in value]
    last = len(messages) - 1
    answer = messages[last]
    check.expect(answer, dict, f"{field}[{last}]", "an object")
    if answer.get("role") != "assistant":
        check.fail(f"{field}[{last}].role",
                   f"the last message must be the assistant's answer, got {answer.get('role')!r}")
    parts = answer.get("content")
    check.expect(parts, list, f"{field}[{last}].content", "a string or a list of text parts")
    texts = []
    for j, part in enumerate(parts):
        where = f"{field}[{last}].content[{j}]"
        check.expect(part, dict, where, "an object")
        if part.get("type") != "text":
            check.fail(f"{where}.type", f"an answer holds text parts only, got {part.get('type')!r}")
        check.expect(part.get("text"), str, f"{where}.text", "a string")
        texts.append(part["text"])
    text = "".join(texts)
    if not text:
        check.fail(f"{field}[{last}].content", "expected a non-empty answer")
    before = messages[:last]
    if before:
        check_messages(check, before, field=field)
    return text, before


def _fill_images(check: Checker, prompt: list[Any], images: Any, field: str) -> list[Any]:
    """The prompt with `images` in its image placeholders, or before the first user turn's text."""
    if images is None:
        return prompt
    check.expect(images, list, "images", "a list of image references")
    for i, ref in enumerate(images):
        check.non_empty_string(ref, f"images[{i}]")
    if not images:
        return prompt
    slots = [(i, j) for i, message in enumerate(prompt) if isinstance(message, dict)
             and isinstance(message.get("content"), list)
             for j, part in enumerate(message["content"])
             if isinstance(part, dict) and part.get("type") == "image" and "image" not in part]
    filled = [dict(message, content=list(message["content"])) if isinstance(message, dict)
              and isinstance(message.get("content"), list) else message for message in prompt]
    if not slots:
        first_user = next((i for i, m in enumerate(filled) if isinstance(m, dict) and m.get("role") == "user"), None)
        if first_user is None or not isinstance(filled[first_user].get("content"), list):
            check.fail(field, "has no user turn to put `images` in")
        images_first = [{"type": "image", "image": ref} for ref in images]
        filled[first_user]["content"] = images_first + filled[first_user]["content"]
        return filled
    if len(slots) != len(images):
        check.fail("images", f"{len(images)} image(s) for {len(slots)} image placeholder(s) in {field}")
    for (i, j), ref in zip(slots, images):
        filled[i]["content"][j] = {"type": "image", "image": ref}
    return filled
