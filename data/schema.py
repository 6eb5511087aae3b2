"""The sample schema: one JSON record per line of a JSONL shard.

A sample is {"id", "task", "messages", "target"}. `messages` is the HF / Qwen chat form:

    {"role": "user", "content": [{"type": "image", "image": "images/x.png"}, {"type": "text", "text": "..."}]}

Image references are paths relative to the shard file's folder, absolute paths, or s3:// URIs.
A pre-training sample ends with the assistant's answer; an RL or evaluation prompt ends with the user's
turn and must carry a `target` (the ground truth its reward or scorer checks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

TASKS = (
    "caption", "vqa", "interleaved", "ocr", "grounding", "point", "counting",
    "math", "chart", "gui", "reasoning", "text",
)
ROLES = ("system", "user", "assistant")

# Target shape per task: required keys, optional keys. Tasks absent here take any dict or None.
ANSWER_TASKS = frozenset({"math", "reasoning", "vqa", "chart", "ocr"})
BOX_TASKS = frozenset({"grounding", "point"})
VERIFIABLE_TASKS = ANSWER_TASKS | BOX_TASKS | {"gui", "counting"}
_TARGET_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    **{t: (frozenset({"answer"}), frozenset({"choices"})) for t in ANSWER_TASKS},
    **{t: (frozenset({"box"}), frozenset({"label"})) for t in BOX_TASKS},
    "gui": (frozenset({"box", "action"}), frozenset({"label"})),
    "counting": (frozenset({"count"}), frozenset({"label"})),
}
_RECORD_KEYS = ("id", "task", "messages", "target")


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ImagePart(TypedDict):
    type: Literal["image"]
    image: str


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: list[TextPart | ImagePart]


class SampleError(ValueError):
    """A record that does not follow the schema; the message names file, line and field."""

    def __init__(self, problem: str, *, file: str | None = None, line_no: int | None = None,
                 field: str | None = None):
        self.problem, self.file, self.line_no, self.field = problem, file, line_no, field
        where = file if file is not None else "<record>"
        if line_no is not None:
            where = f"{where}:{line_no}"
        super().__init__(f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class Checker:
    """Raises SampleError with the record's location and the offending field."""

    def __init__(self, file: str | None, line_no: int | None):
        self.file, self.line_no = file, line_no

    def fail(self, field: str | None, problem: str) -> None:
        raise SampleError(problem, file=self.file, line_no=self.line_no, field=field)

    def expect(self, value: Any, kind: type | tuple[type, ...], field: str, what: str) -> None:
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok:
            self.fail(field, f"expected {what}, got {_type_name(value)}")

    def non_empty_string(self, value: Any, field: str) -> None:
        self.expect(value, str, field, "a string")
        if not value:
            self.fail(field, "expected a non-empty string")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def json_record(line: str, file: str | None, line_no: int | None) -> Any:
    """One JSONL line parsed; invalid JSON is a SampleError naming the file, line and column."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise SampleError(f"invalid JSON: {exc.msg} at column {exc.colno}", file=file, line_no=line_no) from exc


@dataclass(frozen=True)
class Sample:
    id: str
    task: str
    messages: list[Message]
    target: dict[str, Any] | None

    @classmethod
    def from_json(cls, line: str, *, file: str | None = None, line_no: int | None = None) -> Sample:
        return cls.from_dict(json_record(line, file, line_no), file=file, line_no=line_no)

    @classmethod
    def from_dict(cls, record: Any, *, file: str | None = None, line_no: int | None = None) -> Sample:
        check = Checker(file, line_no)
        if not isinstance(record, dict):
            check.fail(None, f"expected a JSON object, got {_type_name(record)}")
        for key in record:
            if key not in _RECORD_KEYS:
                check.fail(str(key), f"unknown field (allowed: {', '.join(_RECORD_KEYS)})")
        for key in ("id", "task", "messages"):
            if key not in record:
                check.fail(key, "missing")
        check.non_empty_string(record["id"], "id")
        task = record["task"]
        check.expect(task, str, "task", "a string")
        if task not in TASKS:
            check.fail("task", f"unknown task {task!r} (one of {', '.join(TASKS)})")
        messages = record["messages"]
        check_messages(check, messages, task=task)
        target = record.get("target")
        last_role = messages[-1]["role"]
        _check_target(check, target, task, is_prompt=last_role != "assistant")
        return cls(id=record["id"], task=task, messages=messages, target=target)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "messages": self.messages, "target": self.target}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def image_refs(self) -> list[str]:
        """Image references in order of appearance (the order image features fill placeholders)."""
        return [part["image"] for message in self.messages for part in message["content"]
                if part["type"] == "image"]

    @property
    def has_response(self) -> bool:
        """True for a training sample (ends with the assistant's answer), False for an RL/eval prompt."""
        return self.messages[-1]["role"] == "assistant"

    def prompt_messages(self) -> list[Message]:
        """The messages a model is asked to continue: everything before the final assistant answer."""
        return self.messages[:-1] if self.has_response else list(self.messages)

    def response_text(self) -> str | None:
        """The final assistant answer's text, or None for a prompt sample."""
        if not self.has_response:
            return None
        return "".join(part["text"] for part in self.messages[-1]["content"] if part["type"] == "text")


def check_messages(check: Checker, messages: Any, *, task: str | None = None, field: str = "messages") -> None:
    """A conversation in chat form; `field` names the list in errors (a preference pair's "prompt")."""
    check.expect(messages, list, field, "a list")
    if not messages:
        check.fail(field, "expected at least one message")
    n_images = 0
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        check.expect(message, dict, where, "an object")
        for key in message:
            if key not in ("role", "content"):
                check.fail(f"{where}.{key}", "unknown field (allowed: role, content)")
        if "role" not in message:
            check.fail(f"{where}.role", "missing")
        role = message["role"]
        check.expect(role, str, f"{where}.role", "a string")
        if role not in ROLES:
            check.fail(f"{where}.role", f"unknown role {role!r} (one of {', '.join(ROLES)})")
        if role == "system" and i != 0:
            check.fail(f"{where}.role", "a system message may only be the first message")
        if "content" not in message:
            check.fail(f"{where}.content", "missing")
        content = message["content"]
        check.expect(content, list, f"{where}.content", "a list of parts")
        if not content:
            check.fail(f"{where}.content", "expected at least one part")
        for j, part in enumerate(content):
            n_images += _check_part(check, part, f"{where}.content[{j}]", role)
    roles = [m["role"] for m in messages]
    if "user" not in roles:
        check.fail(field, "expected at least one user message")
    first_turn = 1 if roles[0] == "system" else 0
    if roles[first_turn] != "user":
        check.fail(f"{field}[{first_turn}].role", "the conversation must start with a user message")
    if roles[-1] not in ("user", "assistant"):
        check.fail(f"{field}[{len(roles) - 1}].role", "the last message must be the user's or the assistant's")
    if task == "text" and n_images:
        check.fail(field, "a 'text' sample may not reference images")


def _check_part(check: Checker, part: Any, where: str, role: str) -> int:
    check.expect(part, dict, where, "an object")
    kind = part.get("type")
    if kind == "text":
        allowed = ("type", "text")
        check.expect(part.get("text"), str, f"{where}.text", "a string")
    elif kind == "image":
        allowed = ("type", "image")
        if role == "assistant":
            check.fail(f"{where}.type", "assistant messages hold text only")
        check.non_empty_string(part.get("image"), f"{where}.image")
    else:
        check.fail(f"{where}.type", f"expected 'text' or 'image', got {kind!r}")
    for key in part:
        if key not in allowed:
            check.fail(f"{where}.{key}", f"unknown field (allowed: {', '.join(allowed)})")
    return int(kind == "image")


def _check_target(check: Checker, target: Any, task: str, *, is_prompt: bool) -> None:
    if target is None:
        if task in VERIFIABLE_TASKS:
            check.fail("target", f"required for task '{task}'")
        if is_prompt:
            check.fail("target", "required for a prompt sample (one without an assistant answer)")
        return
    check.expect(target, dict, "target", "an object or null")
    required, optional = _TARGET_KEYS.get(task, (frozenset(), None))
    for key in sorted(required):
        if key not in target:
            check.fail(f"target.{key}", f"missing (task '{task}' needs {', '.join(sorted(required))})")
    if optional is not None:
        for key in target:
            if key not in required and key not in optional:
                allowed = ", ".join(sorted(required | optional))
                check.fail(f"target.{key}", f"unknown field for task '{task}' (allowed: {allowed})")
    if "answer" in target:
        check.expect(target["answer"], str, "target.answer", "a string")
    if "choices" in target:
        check.expect(target["choices"], list, "target.choices", "a list of strings")
        for i, choice in enumerate(target["choices"]):
            check.expect(choice, str, f"target.choices[{i}]", "a string")
    if "box" in target:
        _check_box(check, target["box"], "target.box")
    if "action" in target:
        check.non_empty_string(target["action"], "target.action")
    if "label" in target:
        check.expect(target["label"], str, "target.label", "a string")
    if "count" in target:
        check.expect(target["count"], int, "target.count", "an integer")
        if target["count"] < 0:
            check.fail("target.count", f"expected a count >= 0, got {target['count']}")


def _check_box(check: Checker, box: Any, where: str) -> None:
    check.expect(box, list, where, "a list [x1, y1, x2, y2]")
    if len(box) != 4:
        check.fail(where, f"expected 4 numbers [x1, y1, x2, y2], got {len(box)}")
    for i, value in enumerate(box):
        check.expect(value, (int, float), f"{where}[{i}]", "a number")
        if value < 0:
            check.fail(f"{where}[{i}]", f"expected a pixel coordinate >= 0, got {value}")
    if not (box[0] < box[2] and box[1] < box[3]):
        check.fail(where, f"expected x1 < x2 and y1 < y2, got {box}")
