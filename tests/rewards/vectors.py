"""Hand-written reward vectors: (task, response, target, expected reward, expected reason).

Expected rewards are worked out by hand in the comments; they are shared by the function tests, the
router tests and the HTTP tests (which also check that HTTP and in-process scoring agree)."""
from __future__ import annotations

MEGABYTE_FILLER = "lorem ipsum " * (1_000_000 // 12)
BRACE_BOMB = "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"  # Math-Verify needs ~25 s on it

GOLD_BOX = {"box": [10, 20, 110, 220]}
SQUARE = {"box": [0, 0, 10, 10]}

VECTORS: list[tuple[str, str, object, float, str]] = [
    # grounding: (GIoU + 1) / 2
    ("grounding", '[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]', GOLD_BOX, 1.0, "ok"),
    ("grounding", "The cat is at [10, 20, 110, 220].", GOLD_BOX, 1.0, "ok"),
    ("grounding", "<think>first guess [0, 0, 1, 1]</think>[10, 20, 110, 220]", GOLD_BOX, 1.0, "ok"),
    ("grounding", "\\boxed{[10.0, 20.0, 110.0, 220.0]}", GOLD_BOX, 1.0, "ok"),
    ("grounding", "框：[10, 20, 110, 220] 🐱", GOLD_BOX, 1.0, "ok"),
    # inter 50, union 150, hull 150: giou 1/3 -> 2/3
    ("grounding", "[5, 0, 15, 10]", SQUARE, 2 / 3, "ok"),
    # disjoint: inter 0, union 200, hull 300: giou -1/3 -> 1/3
    ("grounding", "[20, 0, 30, 10]", SQUARE, 1 / 3, "ok"),
    # zero-width box inside the gold box: iou 0, hull = union -> giou 0 -> 0.5
    ("grounding", "[5, 5, 5, 10]", SQUARE, 0.5, "ok"),
    # the first box of a JSON list counts: [0,0,5,10] -> iou 0.5, hull = union -> 0.75
    ("grounding", '[{"bbox_2d": [0, 0, 5, 10]}, {"bbox_2d": [0, 0, 10, 10]}]', SQUARE, 0.75, "ok"),
    ("grounding", "[10, 10, 0, 0]", SQUARE, 0.0, "unparseable"),  # inverted
    ("grounding", "[nan, 0, 10, 10]", SQUARE, 0.0, "unparseable"),
    ("grounding", "[0, 0, 1e200, 1e200]", SQUARE, 0.0, "unparseable"),  # areas overflow to inf
    ("grounding", "[0, 0, 1e999, 10]", SQUARE, 0.0, "unparseable"),
    ("grounding", "[1, 2, 3, 4, 5]", SQUARE, 0.0, "unparseable"),
    ("grounding", "", SQUARE, 0.0, "unparseable"),
    ("grounding", MEGABYTE_FILLER, SQUARE, 0.0, "unparseable"),
    ("grounding", MEGABYTE_FILLER + "[0, 0, 10, 10]", SQUARE, 1.0, "ok"),
    # point
    ("point", '{"point_2d": [50, 60]}', {"box": [0, 0, 100, 100]}, 1.0, "ok"),
    ("point", "(150, 60)", {"box": [0, 0, 100, 100]}, 0.0, "ok"),
    ("point", "[100, 100]", {"box": [0, 0, 100, 100]}, 1.0, "ok"),  # edges count
    ("point", "[40, 40, 60, 60]", {"box": [0, 0, 100, 100]}, 1.0, "ok"),  # a box's centre
    ("point", "somewhere on the left", {"box": [0, 0, 100, 100]}, 0.0, "unparseable"),
    # counting
    ("counting", "There are 3 apples.", {"count": 3}, 1.0, "ok"),
    ("counting", "\\boxed{three}", {"count": 3}, 1.0, "ok"),
    ("counting", "Twenty-one", {"count": 21}, 1.0, "ok"),
    ("counting", "2 red and 3 blue, so 5 in total", {"count": 5}, 1.0, "ok"),
    ("counting", "3.0", {"count": 3}, 1.0, "ok"),
    ("counting", "3.5", {"count": 3}, 0.0, "ok"),
    ("counting", "1,000", {"count": 1000}, 1.0, "ok"),
    ("counting", "99999999999999999999999999", {"count": 3}, 0.0, "ok"),
    ("counting", "1" * 5000, {"count": 3}, 0.0, "unparseable"),  # past Python's int digit limit
    ("counting", "none at all", {"count": 0}, 0.0, "unparseable"),
    ("counting", "", {"count": 0}, 0.0, "unparseable"),
    # temporal: IoU of spans
    ("temporal", "\\boxed{[00:05, 00:12]}", {"span": [5, 12]}, 1.0, "ok"),
    ("temporal", "[00:05, 00:10]", {"span": [0, 10]}, 0.5, "ok"),
    ("temporal", "[01:00, 01:30]", {"span": [0, 10]}, 0.0, "ok"),
    ("temporal", "[1:02:03, 1:02:13]", {"span": [3723, 3733]}, 1.0, "ok"),
    ("temporal", "[00:12, 00:05]", {"span": [5, 12]}, 0.0, "unparseable"),  # inverted
    ("temporal", "[00:75, 01:00]", {"span": [5, 12]}, 0.0, "unparseable"),  # 75 seconds
    ("temporal", "from five to twelve", {"span": [5, 12]}, 0.0, "unparseable"),
    # choice
    ("choice", "B", {"answer": "B"}, 1.0, "ok"),
    ("choice", "(C)", {"answer": "C"}, 1.0, "ok"),
    ("choice", "The answer is D.", {"answer": "D"}, 1.0, "ok"),
    ("choice", "\\boxed{A}", {"answer": "(A)"}, 1.0, "ok"),
    ("choice", "A. 42", {"answer": "A"}, 1.0, "ok"),
    ("choice", "b", {"answer": "B"}, 1.0, "ok"),
    ("choice", "I pick (B) because it is red", {"answer": "B"}, 1.0, "ok"),
    ("choice", "The answer is (A)", {"answer": "E"}, 0.0, "ok"),
    ("choice", "none of these", {"answer": "A"}, 0.0, "unparseable"),
    # exact (vqa)
    ("vqa", "Red.", {"answer": "red"}, 1.0, "ok"),
    ("vqa", "  RED ", {"answer": "red"}, 1.0, "ok"),
    ("vqa", "\\boxed{3}", {"answer": 3}, 1.0, "ok"),
    ("vqa", "3.0", {"answer": "3"}, 1.0, "ok"),
    ("vqa", "Crimson", {"answer": ["red", "crimson"]}, 1.0, "ok"),
    ("vqa", "blue", {"answer": "red"}, 0.0, "ok"),
    ("vqa", "", {"answer": "red"}, 0.0, "unparseable"),
    # ocr: 1 - lev / max len after lower-casing and collapsing spaces
    ("ocr", "Hello World", {"answer": "hello   world"}, 1.0, "ok"),
    ("ocr", "hello wrld", {"answer": "hello world"}, 1 - 1 / 11, "ok"),
    ("ocr", "日本語のテキスト", {"answer": "日本語のテキスト"}, 1.0, "ok"),
    ("ocr", "abc", {"answer": ["xyz", "abd"]}, 2 / 3, "ok"),
    ("ocr", "", {"answer": "hello"}, 0.0, "unparseable"),
    # chart: relative tolerance 0.05 (conf/rl/morl.yaml)
    ("chart", "45", {"answer": "45"}, 1.0, "ok"),
    ("chart", "46", {"answer": "45"}, 1.0, "ok"),  # 2.2 % off
    ("chart", "48", {"answer": "45"}, 0.0, "ok"),  # 6.7 % off
    ("chart", "45%", {"answer": "0.45"}, 1.0, "ok"),
    ("chart", "\\boxed{1,200}", {"answer": 1200}, 1.0, "ok"),
    ("chart", "about 44.5 million", {"answer": "45"}, 1.0, "ok"),
    ("chart", "Yes", {"answer": "yes"}, 1.0, "ok"),
    ("chart", "no", {"answer": "yes"}, 0.0, "ok"),
    ("chart", "0", {"answer": "0"}, 1.0, "ok"),
    ("chart", "0.01", {"answer": "0"}, 0.0, "ok"),
    ("chart", "nan", {"answer": "45"}, 0.0, "unparseable"),
    ("chart", "1e400", {"answer": "45"}, 0.0, "unparseable"),
    # gui: action type and point in box
    ("gui", '{"action": "click", "point_2d": [50, 50]}', {"action": "click", "box": [0, 0, 100, 100]}, 1.0, "ok"),
    ("gui", '{"action": "click", "start_point": [50, 50]}', {"action": "click", "box": [0, 0, 100, 100]}, 1.0, "ok"),
    ("gui", "click(50, 50)", {"action": "click", "box": [0, 0, 100, 100]}, 1.0, "ok"),
    ("gui", '{"action_type": "CLICK", "coordinate": [10, 10]}', {"action": "click", "box": [0, 0, 100, 100]},
     1.0, "ok"),
    ("gui", "type(50, 50)", {"action": "click", "box": [0, 0, 100, 100]}, 0.0, "ok"),
    ("gui", '{"action": "click", "point_2d": [150, 50]}', {"action": "click", "box": [0, 0, 100, 100]}, 0.0, "ok"),
    ("gui", '{"action": "click"}', {"action": "click", "box": [0, 0, 100, 100]}, 0.0, "unparseable"),
    ("gui", "I would press the button", {"action": "click", "box": [0, 0, 100, 100]}, 0.0, "unparseable"),
]

MATH_VECTORS: list[tuple[str, str, object, float, str]] = [
    ("math", "so \\boxed{\\frac{1}{2}}", {"answer": "0.5"}, 1.0, "ok"),
    ("math", "The answer is \\boxed{2\\sqrt{3}}.", {"answer": "\\sqrt{12}"}, 1.0, "ok"),
    ("math", "<think>\\boxed{5}</think> so \\boxed{4}", {"answer": 4}, 1.0, "ok"),
    ("math", "first \\boxed{1}, finally \\boxed{2}", {"answer": "2"}, 1.0, "ok"),
    ("math", "first \\boxed{1}, finally \\boxed{2}", {"answer": "1"}, 0.0, "ok"),
    ("math", "\\boxed{x^2+1}", {"answer": "1 + x^2"}, 1.0, "ok"),
    ("math", "so x = 7", {"answer": "7"}, 1.0, "ok"),
    ("reasoning", "答案是 \\boxed{42} 🎉", {"answer": "42"}, 1.0, "ok"),
    ("math", "", {"answer": "1"}, 0.0, "unparseable"),
    ("math", MEGABYTE_FILLER, {"answer": "1"}, 0.0, "unparseable"),
    ("math", MEGABYTE_FILLER + " \\boxed{42}", {"answer": "42"}, 1.0, "ok"),
    ("math", "\\boxed{NaN}", {"answer": "1"}, 0.0, "ok"),
    ("math", "\\boxed{1e999}", {"answer": "1"}, 0.0, "ok"),
]

# Targets a reward function must refuse (TargetError; the router scores them 0 with reason "error").
BAD_TARGETS: list[tuple[str, str, object]] = [
    ("grounding", "[0, 0, 1, 1]", {"box": [0, 0, 0, 10]}),  # zero-area gold
    ("grounding", "[0, 0, 1, 1]", {"box": [10, 10, 0, 0]}),  # inverted gold
    ("grounding", "[0, 0, 1, 1]", {"box": [0, 0, float("nan"), 1]}),
    ("grounding", "[0, 0, 1, 1]", {"box": [0, 0, 1]}),
    ("grounding", "[0, 0, 1, 1]", {"box": [True, 0, 1, 1]}),
    ("grounding", "[0, 0, 1, 1]", {"bbox": [0, 0, 1, 1]}),
    ("grounding", "[0, 0, 1, 1]", [0, 0, 1, 1]),
    ("point", "[1, 1]", {"box": "0 0 1 1"}),
    ("counting", "3", {"count": "3"}),
    ("counting", "3", {"count": True}),
    ("counting", "3", {"count": -1}),
    ("temporal", "[00:01, 00:02]", {"span": [10, 5]}),
    ("temporal", "[00:01, 00:02]", {"span": [float("nan"), 5]}),
    ("choice", "A", {"answer": "AB"}),
    ("choice", "A", {"answer": 1}),
    ("vqa", "red", {"answer": []}),
    ("vqa", "red", {"answer": None}),
    ("ocr", "text", {"answer": ""}),
    ("chart", "1", {"answer": {"value": 1}}),
    ("gui", "click(1, 1)", {"box": [0, 0, 10, 10]}),  # no action
]
