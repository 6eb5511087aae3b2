"""MMBench: VLMEvalKit TSV (base64 images, reused-image index cells) and lmms-lab parquet; CircularEval."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import (HOSTILE_RESPONSES, mmbench_rows, png_bytes, score_responses, scoring,
                                       within_chance, write_mmbench_parquet, write_mmbench_tsv)


def right_answers(rows):
    return {str(r["index"]): f"\\boxed{{{r['answer']}}}" for r in rows}


@pytest.mark.parametrize("layout", ["tsv", "parquet"])
def test_load_reads_rows_images_and_groups(tmp_path, layout):
    rows = mmbench_rows(3, seed=0)
    root = (write_mmbench_tsv if layout == "tsv" else write_mmbench_parquet)(tmp_path / "mmb", rows)
    items = benchmark("mmbench", scoring()).load(root)
    assert [i.id for i in items] == [str(r["index"]) for r in rows]
    copy = next(i for i in items if i.id == "1000002")          # copy 1 of question 2
    assert copy.group == "2" and copy.gold == rows[9]["answer"]
    images = {i.id: i.prompt[0]["image"] for i in items}
    if layout == "tsv":  # the copy's image cell is "2": the image of row index 2 is reused
        assert images["1000002"] == images["2"] == png_bytes(2)
    assert "a hint" in items[0].prompt[1]["text"] and "nan" not in items[1].prompt[1]["text"]
    assert items[0].subset == "cat_even"


def test_circular_eval_one_wrong_copy_fails_the_question_and_n_counts_questions(tmp_path):
    rows = mmbench_rows(4, seed=0)
    root = write_mmbench_tsv(tmp_path / "mmb", rows)
    answers = right_answers(rows)
    report, item_rows = score_responses("mmbench", root, answers)
    assert (report.score, report.n, len(item_rows)) == (1.0, 4, 16)
    wrong = next(r for r in rows if r["index"] == 3_000_001)      # the last copy of question 1
    answers[str(wrong["index"])] = f"\\boxed{{{'A' if wrong['answer'] != 'A' else 'B'}}}"
    del answers["2000002"]                                         # a missing copy counts wrong too
    report, item_rows = score_responses("mmbench", root, answers)
    assert (report.score, report.n, report.missing) == (0.5, 4, 1)
    assert sum(r["score"] for r in item_rows) == 14
    assert report.by == {"cat_even": 0.5, "cat_odd": 0.5}          # question 0 right, 2 wrong; 1 wrong, 3 right


@pytest.mark.parametrize("response, letter", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("The answer is B", "B"), ("\\boxed{B}", "B"), ("B: thing 0-1", "B"),
    ("thing 0-1", "B"),                 # the option text alone
    ("A or B", None),                   # two letters and no unique option text: a judge's case, 0 offline
    ("", None), ("I don't know", None),
])
def test_letter_extraction(tmp_path, response, letter):
    rows = mmbench_rows(1, seed=0, copies=False)
    rows[0]["answer"] = "B"
    root = write_mmbench_tsv(tmp_path / "mmb", rows)
    report, item_rows = score_responses("mmbench", root, {"0": response})
    assert item_rows[0]["parsed"] == letter
    assert report.score == (1.0 if letter == "B" else 0.0)


def test_hostile_responses_score_zero(tmp_path):
    adapter = benchmark("mmbench", scoring())
    for item in adapter.load(write_mmbench_tsv(tmp_path / "mmb", mmbench_rows(2, seed=0))):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_gold_double_scores_one_and_random_double_scores_circular_chance(tmp_path):
    rows = mmbench_rows(150, seed=3, options=2)       # two options: two copies; chance (1/2)^2 per question
    root = write_mmbench_tsv(tmp_path / "mmb", rows)
    report, _ = score_responses("mmbench", root, right_answers(rows))
    assert (report.score, report.n) == (1.0, 150)
    rng = random.Random(0)
    report, _ = score_responses("mmbench", root, {str(r["index"]): rng.choice("AB") for r in rows})
    assert within_chance(report.score, 0.25, 150)


def test_reused_image_index_without_an_image_fails_naming_the_row(tmp_path):
    rows = mmbench_rows(2, seed=0, copies=False)
    rows[1]["image"] = "7"
    with pytest.raises(BenchmarkDataError, match=r"MMBench_DEV_EN_V11.tsv row 1 \(line 3\): field 'image' reuses .* 7"):
        benchmark("mmbench", scoring()).load(write_mmbench_tsv(tmp_path / "mmb", rows))


def test_copy_without_its_question_fails(tmp_path):
    rows = [r for r in mmbench_rows(2, seed=0) if r["index"] != 1]
    for r in rows:
        if r["index"] % 1_000_000 == 1:
            r["image"] = rows[0]["image"]
    with pytest.raises(BenchmarkDataError, match=r"row index 1000001 is a circular copy of index 1"):
        benchmark("mmbench", scoring()).load(write_mmbench_tsv(tmp_path / "mmb", rows))


def test_test_split_without_answers_fails(tmp_path):
    rows = mmbench_rows(1, seed=0, copies=False)
    rows[0]["answer"] = ""
    with pytest.raises(BenchmarkDataError, match=r"row 0 \(line 2\): field 'answer'"):
        benchmark("mmbench", scoring()).load(write_mmbench_tsv(tmp_path / "mmb", rows))
