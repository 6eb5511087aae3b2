"""The score report of a pipeline run: scores per benchmark per evaluated step, as a table and a plot.

Input: the evaluation outputs of the run in pipeline order, `{step label: scores}`, the label being the step
whose checkpoint was evaluated (stage1 ... stage4, morl) and scores the eval job's scores.json (its
`benchmarks` section, or the whole file): `{benchmark: {metric, score, n, ci95, by, chance}}`.

- `score_rows`: one row per benchmark: benchmark, metric, chance, the score of each step (None where a step
  did not score it) and `x_chance`, the last step's score over the chance level. These rows are the Prefect
  table artifact (`publish_table`).
- `to_markdown`: the same table, each score with its 95% interval.
- `plot_scores`: a PNG, one panel per benchmark: its score across the steps with its interval as error bars
  and its chance level as a dotted line (a matplotlib Figure object rendered by Agg: no global backend
  state, safe in Prefect's task threads).
- `log_to_mlflow`: both files (and the rows as JSON) into the parent run's `artifact_dir`.
- `report_run`: what the flow calls once its steps are done: the scores file (the kind's `scores:`) of every
  completed step whose kind declares one, labelled by its `from:` step, read from the store (fetched into
  `out_dir` from s3://), built, logged to the parent MLflow run and published as the table artifact `table_key`.

Settings: conf/report/<name>.yaml through ReportConfig. No torch here (orchestration).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from conf import ConfigError, load_group, validated

MARKDOWN_FILE = "scores.md"
PLOT_FILE = "scores.png"
ROWS_FILE = "scores.json"
_ARTIFACT_KEY = re.compile(r"^[a-z0-9-]+$")  # what Prefect accepts as an artifact key


@dataclass
class ReportConfig:
    score_decimals: int = MISSING
    figure_width_in: float = MISSING
    row_height_in: float = MISSING         # the plot's height per row of panels
    dpi: int = MISSING
    plot_columns: int = MISSING            # benchmark panels per row of the plot
    artifact_dir: str = MISSING

    def check(self, where: str) -> None:
        if self.score_decimals < 0:
            raise ConfigError(f"{where}.score_decimals: must be >= 0, got {self.score_decimals}")
        for key in ("figure_width_in", "row_height_in"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{where}.{key}: must be > 0, got {getattr(self, key)}")
        if self.plot_columns < 1:
            raise ConfigError(f"{where}.plot_columns: must be >= 1, got {self.plot_columns}")
        if self.dpi < 1:
            raise ConfigError(f"{where}.dpi: must be >= 1, got {self.dpi}")
        if not self.artifact_dir:
            raise ConfigError(f"{where}.artifact_dir: empty")


def load_report_config(name: str = "default") -> ReportConfig:
    return validated(ReportConfig, load_group("report", name), where=f"report/{name}")


class ReportError(ValueError):
    """Scores that cannot be reported; the message names the step, benchmark and field."""


@dataclass(frozen=True)
class Report:
    markdown: str
    rows: list[dict[str, Any]]
    plot: Path


# ---------------------------------------------------------------------------------------- the scores

def read_scores(path: str | Path) -> dict[str, dict[str, Any]]:
    """The benchmarks of a scores.json file (the eval job's, or a bare {benchmark: {...}})."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable scores.json ({exc})") from exc
    return benchmarks_of(data, str(path))


def benchmarks_of(data: Any, where: str) -> dict[str, dict[str, Any]]:
    """The `benchmarks` section of a scores.json document, each entry checked."""
    if isinstance(data, Mapping) and isinstance(data.get("benchmarks"), Mapping):
        data = data["benchmarks"]
    if not isinstance(data, Mapping):
        raise ReportError(f"{where}: expected {{benchmark: {{metric, score, ...}}}}, got {type(data).__name__}")
    for name, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ReportError(f"{where}: benchmark {name!r}: expected an object, got {type(entry).__name__}")
        if not _is_number(entry.get("score")):
            raise ReportError(f"{where}: benchmark {name!r}: field 'score' must be a number, got {entry.get('score')!r}")
        for key in ("chance",):
            if entry.get(key) is not None and not _is_number(entry[key]):
                raise ReportError(f"{where}: benchmark {name!r}: field {key!r} must be a number or null")
        ci = entry.get("ci95")
        if ci is not None and not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(map(_is_number, ci))):
            raise ReportError(f"{where}: benchmark {name!r}: field 'ci95' must be [lo, hi], got {ci!r}")
    return {str(name): dict(entry) for name, entry in data.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked(step_scores: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    if not step_scores:
        raise ReportError("no evaluated step to report")
    return {str(step): benchmarks_of(scores, f"step {step}") for step, scores in step_scores.items()}


def _benchmarks(steps: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every benchmark any step scored: in the order they first appear, step by step."""
    names: list[str] = []
    for scores in steps.values():
        names.extend(name for name in scores if name not in names)
    return names


def _latest(steps: dict[str, dict[str, dict[str, Any]]], name: str, key: str) -> Any:
    """The benchmark's `key` at the last step that states it."""
    for scores in reversed(list(steps.values())):
        if name in scores and scores[name].get(key) is not None:
            return scores[name][key]
    return None


def score_rows(step_scores: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per benchmark: {"benchmark", "metric", "chance", <step>: score | None ..., "x_chance"}."""
    steps = _checked(step_scores)
    rows = []
    for name in _benchmarks(steps):
        row: dict[str, Any] = {"benchmark": name, "metric": _latest(steps, name, "metric"),
                               "chance": _latest(steps, name, "chance")}
        for step, scores in steps.items():
            row[step] = float(scores[name]["score"]) if name in scores else None
        last = next((row[step] for step in reversed(list(steps)) if row[step] is not None), None)
        row["x_chance"] = last / row["chance"] if row["chance"] and last is not None else None
        rows.append(row)
    return rows


def to_markdown(step_scores: Mapping[str, Mapping[str, Any]], cfg: ReportConfig) -> str:
    steps = _checked(step_scores)
    d = cfg.score_decimals

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.{d}f}"

    lines = ["| benchmark | metric | chance | " + " | ".join(steps) + " | last / chance |",
             "|---|---|---:|" + "---:|" * len(steps) + "---:|"]
    for row in score_rows(step_scores):
        cells = []
        for step, scores in steps.items():
            entry = scores.get(row["benchmark"])
            if entry is None:
                cells.append("")
                continue
            ci = entry.get("ci95")
            cells.append(number(entry["score"]) + (f" [{ci[0]:.{d}f}, {ci[1]:.{d}f}]" if ci else ""))
        ratio = "" if row["x_chance"] is None else f"{row['x_chance']:.2f}x"
        lines.append(f"| {row['benchmark']} | {row['metric'] or ''} | {number(row['chance'])} | "
                     + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(["Scores per evaluated step (95% interval); chance: the score of answering at random.", "",
                      *lines]) + "\n"


def plot_scores(step_scores: Mapping[str, Mapping[str, Any]], path: str | Path, cfg: ReportConfig) -> Path:
    """A PNG with one panel per benchmark: its score across the steps with the 95% interval as error bars,
    its chance level as a dotted line (`plot_columns` panels a row)."""
    from matplotlib.figure import Figure

    steps = _checked(step_scores)
    labels = list(steps)
    names = _benchmarks(steps)
    columns = min(cfg.plot_columns, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(cfg.figure_width_in, cfg.row_height_in * rows), dpi=cfg.dpi, layout="constrained")
    grid = figure.subplots(rows, columns, sharey=True, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(names):
            axes.set_visible(False)
            continue
        name = names[index]
        xs = [i for i, step in enumerate(labels) if name in steps[step]]
        ys = [float(steps[labels[i]][name]["score"]) for i in xs]
        lows, highs = [], []
        for i, y in zip(xs, ys):
            ci = steps[labels[i]][name].get("ci95")
            lows.append(y - ci[0] if ci else 0.0)
            highs.append(ci[1] - y if ci else 0.0)
        axes.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=3, label="score")
        chance = _latest(steps, name, "chance")
        if chance is not None:
            axes.axhline(chance, color="grey", linestyle=":", label="chance")
        axes.set_title(name, fontsize="medium")
        axes.set_xticks(range(len(labels)), labels, rotation=45, fontsize="small")
        axes.set_xlim(-0.5, len(labels) - 0.5)
        axes.set_ylim(0.0, 1.0)
        axes.grid(True, alpha=0.3)
    grid.flat[0].legend(loc="upper left", fontsize="small")
    figure.supylabel("score (dotted: chance)")
    figure.supxlabel("evaluated checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def build_report(step_scores: Mapping[str, Mapping[str, Any]], out_dir: str | Path, cfg: ReportConfig) -> Report:
    """The markdown table, its rows and the plot, written into `out_dir` (scores.md, scores.json, scores.png)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(step_scores, cfg)
    rows = score_rows(step_scores)
    (out / MARKDOWN_FILE).write_text(markdown, encoding="utf-8")
    (out / ROWS_FILE).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return Report(markdown=markdown, rows=rows, plot=plot_scores(step_scores, out / PLOT_FILE, cfg))


# ----------------------------------------------------------------------------------- a pipeline run's

def step_scores_of(plan, outcomes: Mapping[str, Any], store, out_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{label: benchmarks} in pipeline order for each completed step whose kind declares a scores file (the
    evaluate steps): its output read through the store (s3:// fetched into out_dir), the label the step it scored (`from:`), or
    "<from>:<step>" where two steps scored the same one, or the step's own name where it has no `from:`."""
    scored = [step for step in plan.steps if plan.kind(step).scores and step.name in outcomes]
    sources = [step.source for step in scored]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for step in scored:
        if not step.source:  # a step that scores no other step's output (e.g. a baseline): its own name
            label = step.name
        else:
            label = step.source if sources.count(step.source) == 1 else f"{step.source}:{step.name}"
        folder = store.materialize(outcomes[step.name].output_uri, Path(out_dir) / step.name)
        result[label] = read_scores(folder / plan.kind(step).scores)
    return result


def report_run(plan, outcomes: Mapping[str, Any], store, client, parent_run_id: str, out_dir: str | Path,
               table_key: str) -> Report | None:
    """The run's score report (see the module docstring); None when no step of the run scored anything."""
    cfg = validated(ReportConfig, plan.config["report"], where="report")
    step_scores = step_scores_of(plan, outcomes, store, Path(out_dir) / "scores")
    if not step_scores:
        return None
    report = build_report(step_scores, out_dir, cfg)
    log_to_mlflow(client, parent_run_id, report, cfg)
    publish_table(report.rows, table_key, f"mimovl pipeline {plan.pipeline}: scores per benchmark per evaluated "
                  "step, with chance", cfg)
    return report


# ------------------------------------------------------------------------------------------ publishing

def log_to_mlflow(client, run_id: str, report: Report, cfg: ReportConfig) -> None:
    """The table (markdown and rows) and the plot into the parent run's `artifact_dir` (an MlflowClient)."""
    client.log_text(run_id, report.markdown, f"{cfg.artifact_dir}/{MARKDOWN_FILE}")
    client.log_dict(run_id, report.rows, f"{cfg.artifact_dir}/{ROWS_FILE}")
    client.log_artifact(run_id, str(report.plot), cfg.artifact_dir)


def table_artifact(rows: list[dict[str, Any]], cfg: ReportConfig) -> list[dict[str, Any]]:
    """The rows as the Prefect table shows them: scores rounded, missing scores empty."""
    def cell(value: Any) -> Any:
        if value is None:
            return ""
        return round(value, cfg.score_decimals) if isinstance(value, float) else value

    return [{key: cell(value) for key, value in row.items()} for row in rows]


def publish_table(rows: list[dict[str, Any]], key: str, description: str, cfg: ReportConfig) -> list[dict[str, Any]]:
    """Publish the rows as a Prefect table artifact (inside a flow run); returns the table sent."""
    from prefect.artifacts import create_table_artifact

    if not _ARTIFACT_KEY.match(key):
        raise ReportError(f"Prefect artifact key {key!r}: only lowercase letters, digits and dashes")
    table = table_artifact(rows, cfg)
    create_table_artifact(table=table, key=key, description=description)
    return table
