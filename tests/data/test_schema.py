import copy
import json

import pytest

from data.schema import TASKS, Sample, SampleError

FILE = "shard-00000.jsonl"


def _record(**changes):
    record = {
        "id": "s1",
        "task": "grounding",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "You are helpful."}]},
            {"role": "user", "content": [{"type": "image", "image": "images/a.png"},
                                         {"type": "text", "text": "Locate the red circle."},
                                         {"type": "image", "image": "s3://bucket/b.png"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "<think>\n</think>\n[...]"}]},
        ],
        "target": {"box": [1, 2, 30, 40], "label": "red circle"},
    }
    record.update(changes)
    return record


def test_round_trip_and_accessors():
    sample = Sample.from_json(json.dumps(_record()), file=FILE, line_no=1)
    assert Sample.from_json(sample.to_json()) == sample
    assert sample.image_refs() == ["images/a.png", "s3://bucket/b.png"]
    assert sample.has_response
    assert sample.response_text() == "<think>\n</think>\n[...]"
    assert [m["role"] for m in sample.prompt_messages()] == ["system", "user"]


def test_prompt_sample_has_no_response_but_a_target():
    record = _record()
    record["messages"] = record["messages"][:2]
    sample = Sample.from_dict(record)
    assert not sample.has_response and sample.response_text() is None
    assert sample.prompt_messages() == record["messages"]


def _mutated(path, value):
    record = _record()
    node = record
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return record


_DELETE = object()

CASES = [
    # (path to change, new value, field named in the error, words of the problem)
    (("messages", 1, "content", 0, "image"), 7, "messages[1].content[0].image", "expected a string"),
    (("messages", 1, "content", 0, "image"), "", "messages[1].content[0].image", "non-empty"),
    (("messages", 1, "content", 1, "type"), "video", "messages[1].content[1].type", "'text' or 'image'"),
    (("messages", 1, "content", 1, "txt"), "x", "messages[1].content[1].txt", "unknown field"),
    (("messages", 1, "role"), "robot", "messages[1].role", "unknown role"),
    (("messages", 1, "content"), "hello", "messages[1].content", "expected a list"),
    (("messages", 2, "content", 0), {"type": "image", "image": "x.png"}, "messages[2].content[0].type",
     "text only"),
    (("task",), "video", "task", "unknown task"),
    (("id",), _DELETE, "id", "missing"),
    (("id",), 3, "id", "expected a string"),
    (("extra",), 1, "extra", "unknown field"),
    (("target", "box"), [1, 2, 3], "target.box", "expected 4 numbers"),
    (("target", "box"), [10, 2, 5, 40], "target.box", "x1 < x2"),
    (("target", "box", 1), True, "target.box[1]", "expected a number"),
    (("target", "box", 0), -1, "target.box[0]", ">= 0"),
    (("target", "box"), _DELETE, "target.box", "missing"),
    (("target", "answer"), "x", "target.answer", "unknown field"),
    (("target",), None, "target", "required for task 'grounding'"),
]


@pytest.mark.parametrize("path,value,field,problem", CASES, ids=[c[2] + ":" + c[3] for c in CASES])
def test_errors_name_file_line_and_field(path, value, field, problem):
    line = json.dumps(_mutated(path, value))
    with pytest.raises(SampleError) as info:
        Sample.from_json(line, file=FILE, line_no=17)
    message = str(info.value)
    assert message.startswith(f"{FILE}:17: field '{field}': ")
    assert problem in message
    assert (info.value.file, info.value.line_no, info.value.field) == (FILE, 17, field)


def test_the_example_message_of_the_spec():
    line = json.dumps(_mutated(("messages", 1, "content", 0, "image"), ["x.png"]))
    with pytest.raises(SampleError, match=r"^shard-00000\.jsonl:17: field 'messages\[1\]\.content\[0\]\.image': "
                                          r"expected a string, got list$"):
        Sample.from_json(line, file=FILE, line_no=17)


@pytest.mark.parametrize("line", ["{not json", "[1, 2]", '"text"'])
def test_non_objects_name_file_and_line(line):
    with pytest.raises(SampleError, match=rf"^{FILE}:3: "):
        Sample.from_json(line, file=FILE, line_no=3)


@pytest.mark.parametrize("task,target,field", [
    ("vqa", {"label": "x"}, "target.answer"),
    ("math", {"answer": 3}, "target.answer"),
    ("counting", {"count": -1}, "target.count"),
    ("counting", {"count": "3"}, "target.count"),
    ("gui", {"box": [0, 0, 5, 5]}, "target.action"),
    ("point", {"point": [1, 2]}, "target.box"),
])
def test_targets_of_verifiable_tasks(task, target, field):
    with pytest.raises(SampleError, match=rf"field '{field.replace('.', r'[.]')}'"):
        Sample.from_dict(_record(task=task, target=target), file=FILE, line_no=5)


def test_conversation_rules():
    prompt_without_target = _record(task="caption", target=None)
    prompt_without_target["messages"] = prompt_without_target["messages"][:2]
    with pytest.raises(SampleError, match="field 'target': required for a prompt sample"):
        Sample.from_dict(prompt_without_target)

    assistant_first = _record()
    assistant_first["messages"] = [assistant_first["messages"][2], assistant_first["messages"][1]]
    with pytest.raises(SampleError, match=r"field 'messages\[0\]\.role': the conversation must start"):
        Sample.from_dict(assistant_first)

    late_system = _record()
    late_system["messages"] = late_system["messages"][1:] + [copy.deepcopy(late_system["messages"][0])]
    with pytest.raises(SampleError, match=r"field 'messages\[2\]\.role': a system message"):
        Sample.from_dict(late_system)

    with pytest.raises(SampleError, match="field 'messages': a 'text' sample may not reference images"):
        Sample.from_dict(_record(task="text", target={"answer": "3"}))


def test_every_task_has_a_valid_form():
    for task in TASKS:
        target = {"caption": None, "interleaved": None, "text": None,
                  "grounding": {"box": [0, 0, 1, 1]}, "point": {"box": [0, 0, 1, 1]},
                  "gui": {"box": [0, 0, 1, 1], "action": "click"}, "counting": {"count": 0}}.get(task, {"answer": "4"})
        record = _record(task=task, target=target)
        if task == "text":
            record["messages"][1]["content"] = [{"type": "text", "text": "What is 2 + 2?"}]
        assert Sample.from_dict(record).task == task
