"""Typed configuration of the synthetic data generator (conf/data/synthetic.yaml) and of the
processor resize that localisation coordinates refer to (conf/model/<model>.yaml `processor:`).

A data config follows the composed model (`model: ${model.name}`): read on its own, its `${model.*}`
interpolations resolve against conf/model/<model>.yaml, by default the root config's default model.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig, OmegaConf

from conf import CONF_DIR, ConfigError, load_group, validated

SPLITS = ("pretrain", "heldout", "rl", "eval")
# Generation order: the held-out splits first, so they do not depend on the pre-training split's size.
GENERATION_ORDER = ("eval", "rl", "heldout", "pretrain")
# Splits whose samples carry the assistant answer (training-style samples); rl and eval hold prompts +
# targets. "heldout" is never trained on: the stages measure their probe loss on it.
ANSWERED_SPLITS = ("pretrain", "heldout")
SHAPE_KINDS = ("circle", "square", "triangle")
GRID = 3  # shapes sit in the cells of a 3x3 grid: the grid of the nine position words
# Tasks whose samples have no verifiable target: pre-training only.
UNTARGETED_TASKS = ("caption", "interleaved")
# Preference pairs (data/synth_pairs.py): their splits, generated in this order (held-out first, as above),
# and the facts a rejected answer changes.
PREFERENCE_SPLITS = ("train", "heldout")
PREFERENCE_GENERATION_ORDER = ("heldout", "train")
FACT_KINDS = ("colour", "count", "position", "number")


def _check_fractions(where: str, fractions: dict[str, float]) -> None:
    if any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: expected fractions >= 0 summing to 1, got {fractions}")


def _check_range(where: str, pair: list[int], low: int) -> None:
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ConfigError(f"{where}: expected [min, max] with {low} <= min <= max, got {pair}")


def _check_rgb(where: str, rgb: list[int]) -> None:
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ConfigError(f"{where}: expected [r, g, b] with values in 0..255, got {rgb}")


@dataclass
class SplitFractions:
    pretrain: float = MISSING
    heldout: float = MISSING
    rl: float = MISSING
    eval: float = MISSING


@dataclass
class TaskWeights:
    pretrain: dict[str, float] = MISSING
    heldout: dict[str, float] = MISSING
    rl: dict[str, float] = MISSING
    eval: dict[str, float] = MISSING


@dataclass
class Canvases:
    scene: list[int] = MISSING
    text_line: list[int] = MISSING
    chart: list[int] = MISSING
    gui: list[int] = MISSING


@dataclass
class SceneConfig:
    small: list[int] = MISSING
    large: list[int] = MISSING
    max_shapes: int = MISSING
    max_count: int = MISSING


@dataclass
class InterleavedConfig:
    min_images: int = MISSING
    max_images: int = MISSING
    max_shapes: int = MISSING


@dataclass
class OcrConfig:
    max_words: int = MISSING
    margin: int = MISSING
    text_colours: list[list[int]] = MISSING
    words: list[str] = MISSING


@dataclass
class MathConfig:
    add_max: int = MISSING
    mul_max: int = MISSING
    margin: int = MISSING


@dataclass
class ChartConfig:
    min_bars: int = MISSING
    max_bars: int = MISSING
    max_value: int = MISSING
    margin: int = MISSING
    label_band: int = MISSING
    value_band: int = MISSING
    bar_fill: float = MISSING
    axis_colour: list[int] = MISSING
    text_colour: list[int] = MISSING
    labels: list[str] = MISSING


@dataclass
class GuiConfig:
    title_bar: int = MISSING
    columns: int = MISSING
    rows: int = MISSING
    min_buttons: int = MISSING
    max_buttons: int = MISSING
    padding: list[int] = MISSING
    height: list[int] = MISSING
    screen_colour: list[int] = MISSING
    title_colour: list[int] = MISSING
    button_colour: list[int] = MISSING
    border_colour: list[int] = MISSING
    text_colour: list[int] = MISSING
    labels: list[str] = MISSING


@dataclass
class ReasoningConfig:
    min_shapes: int = MISSING
    max_shapes: int = MISSING
    max_points: int = MISSING
    terms: list[int] = MISSING
    operand_max: int = MISSING


@dataclass
class TextConfig:
    max_number: int = MISSING
    mul_max: int = MISSING
    names: list[str] = MISSING
    items: list[str] = MISSING


@dataclass
class PreferenceSplits:
    train: float = MISSING
    heldout: float = MISSING


@dataclass
class PreferenceSynthConfig:
    pairs_per_sample: float = MISSING
    splits: PreferenceSplits = MISSING
    kinds: dict[str, float] = MISSING
    max_offset: int = MISSING

    def split_fractions(self) -> dict[str, float]:
        return {split: getattr(self.splits, split) for split in PREFERENCE_SPLITS}

    def pairs(self, samples: int) -> int:
        """Pairs of a data set of `samples` samples."""
        return round(samples * self.pairs_per_sample)

    def check(self, where: str) -> None:
        if self.pairs_per_sample < 0:
            raise ConfigError(f"{where}.pairs_per_sample: expected >= 0, got {self.pairs_per_sample}")
        fractions = self.split_fractions()
        _check_fractions(f"{where}.splits", fractions)
        for kind, weight in self.kinds.items():
            if kind not in FACT_KINDS:
                raise ConfigError(f"{where}.kinds.{kind}: unknown fact kind (one of {FACT_KINDS})")
            if weight < 0:
                raise ConfigError(f"{where}.kinds.{kind}: expected >= 0, got {weight}")
        if self.pairs_per_sample > 0 and not any(w > 0 for w in self.kinds.values()):
            raise ConfigError(f"{where}.kinds: expected at least one weight > 0")
        if self.max_offset < 1:
            raise ConfigError(f"{where}.max_offset: expected >= 1, got {self.max_offset}")


@dataclass
class SynthConfig:
    name: str = MISSING
    model: str = MISSING
    samples: int = MISSING
    seed: int = MISSING
    shard_size: int = MISSING
    png_compress_level: int = MISSING
    max_attempts: int = MISSING
    font_size: int = MISSING
    splits: SplitFractions = MISSING
    task_weights: TaskWeights = MISSING
    canvas: Canvases = MISSING
    background: list[int] = MISSING
    colours: dict[str, list[int]] = MISSING
    shapes: list[str] = MISSING
    scene: SceneConfig = MISSING
    interleaved: InterleavedConfig = MISSING
    ocr: OcrConfig = MISSING
    math: MathConfig = MISSING
    chart: ChartConfig = MISSING
    gui: GuiConfig = MISSING
    reasoning: ReasoningConfig = MISSING
    text: TextConfig = MISSING
    preference: PreferenceSynthConfig = MISSING

    def split_fractions(self) -> dict[str, float]:
        return {split: getattr(self.splits, split) for split in SPLITS}

    def weights(self, split: str) -> dict[str, float]:
        return dict(getattr(self.task_weights, split))

    def check(self, where: str) -> None:
        from data.schema import TASKS

        for key in ("samples", "shard_size", "max_attempts", "font_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}.{key}: expected >= 1, got {getattr(self, key)}")
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(f"{where}.png_compress_level: expected 0..9, got {self.png_compress_level}")
        fractions = self.split_fractions()
        _check_fractions(f"{where}.splits", fractions)
        for split in SPLITS:
            weights = self.weights(split)
            for task, weight in weights.items():
                if task not in TASKS:
                    raise ConfigError(f"{where}.task_weights.{split}.{task}: unknown task (one of {TASKS})")
                if weight < 0:
                    raise ConfigError(f"{where}.task_weights.{split}.{task}: expected >= 0, got {weight}")
                if split not in ANSWERED_SPLITS and task in UNTARGETED_TASKS and weight > 0:
                    raise ConfigError(f"{where}.task_weights.{split}.{task}: '{task}' has no verifiable "
                                      f"target, so it cannot be an {split} prompt")
            if fractions[split] > 0 and not any(w > 0 for w in weights.values()):
                raise ConfigError(f"{where}.task_weights.{split}: expected at least one weight > 0")
        for name in ("scene", "text_line", "chart", "gui"):
            size = getattr(self.canvas, name)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"{where}.canvas.{name}: expected [width, height] > 0, got {size}")
        _check_rgb(f"{where}.background", self.background)
        if len(self.colours) < 3:
            raise ConfigError(f"{where}.colours: expected at least 3 colours, got {len(self.colours)}")
        for name, rgb in self.colours.items():
            _check_rgb(f"{where}.colours.{name}", rgb)
            if list(rgb) == list(self.background):
                raise ConfigError(f"{where}.colours.{name}: equals the background colour")
        if len({tuple(rgb) for rgb in self.colours.values()}) != len(self.colours):
            raise ConfigError(f"{where}.colours: two colour names share one RGB value")
        if not self.shapes or len(set(self.shapes)) != len(self.shapes) or not set(self.shapes) <= set(SHAPE_KINDS):
            raise ConfigError(f"{where}.shapes: expected distinct kinds from {SHAPE_KINDS}, got {self.shapes}")
        self._check_scene(where)
        self._check_tasks(where)
        self.preference.check(f"{where}.preference")
        counts_changed = self.preference.pairs_per_sample > 0 and self.preference.kinds.get("count", 0) > 0
        if counts_changed and self.scene.max_count < 2:
            raise ConfigError(f"{where}.preference.kinds.count: scene.max_count 1 leaves no other count to reject")

    def _check_scene(self, where: str) -> None:
        s = self.scene
        _check_range(f"{where}.scene.small", s.small, 2)
        _check_range(f"{where}.scene.large", s.large, 2)
        if s.small[1] >= s.large[0]:
            raise ConfigError(f"{where}.scene: small shapes must be smaller than large ones")
        cell = min(self.canvas.scene) // GRID
        if s.large[1] > cell:
            raise ConfigError(f"{where}.scene.large: {s.large[1]} px does not fit a grid cell of {cell} px "
                              f"(canvas.scene / {GRID})")
        pairs = len(self.colours) * len(self.shapes)
        for key, value in (("max_shapes", s.max_shapes), ("max_count", s.max_count)):
            if not 1 <= value <= min(GRID * GRID, pairs):
                raise ConfigError(f"{where}.scene.{key}: expected 1..{min(GRID * GRID, pairs)}, got {value}")
        il = self.interleaved
        if not 2 <= il.min_images <= il.max_images or not 1 <= il.max_shapes <= GRID * GRID:
            raise ConfigError(f"{where}.interleaved: expected 2 <= min_images <= max_images and "
                              f"1 <= max_shapes <= {GRID * GRID}")
        r = self.reasoning
        if not 2 <= r.min_shapes <= r.max_shapes <= GRID * GRID:
            raise ConfigError(f"{where}.reasoning: expected 2 <= min_shapes <= max_shapes <= {GRID * GRID}")
        _check_range(f"{where}.reasoning.terms", r.terms, 2)
        if r.max_points < 1 or r.operand_max < 2:
            raise ConfigError(f"{where}.reasoning: expected max_points >= 1 and operand_max >= 2")

    def _check_tasks(self, where: str) -> None:
        o = self.ocr
        if o.max_words < 1 or not o.words or o.margin < 0:
            raise ConfigError(f"{where}.ocr: expected max_words >= 1, margin >= 0 and a word list")
        for i, rgb in enumerate(o.text_colours):
            _check_rgb(f"{where}.ocr.text_colours[{i}]", rgb)
        if not o.text_colours:
            raise ConfigError(f"{where}.ocr.text_colours: expected at least one colour")
        m = self.math
        if m.add_max < 2 or m.mul_max < 2 or m.margin < 0:
            raise ConfigError(f"{where}.math: expected add_max >= 2, mul_max >= 2, margin >= 0")
        c = self.chart
        if not 2 <= c.min_bars <= c.max_bars <= len(c.labels):
            raise ConfigError(f"{where}.chart: expected 2 <= min_bars <= max_bars <= len(labels)")
        if c.max_value < 2 or not 0 < c.bar_fill <= 1:
            raise ConfigError(f"{where}.chart: expected max_value >= 2 and 0 < bar_fill <= 1")
        width, height = self.canvas.chart
        if height - c.label_band - c.value_band - c.margin < c.max_value:
            raise ConfigError(f"{where}.chart: canvas.chart height {height} leaves less than one pixel per "
                              f"value unit")
        if (width - 2 * c.margin) // c.max_bars < 4:
            raise ConfigError(f"{where}.chart: canvas.chart width {width} is too narrow for {c.max_bars} bars")
        for key in ("axis_colour", "text_colour"):
            _check_rgb(f"{where}.chart.{key}", getattr(c, key))
        g = self.gui
        if g.columns < 1 or g.rows < 1 or not 1 <= g.min_buttons <= g.max_buttons <= min(g.columns * g.rows,
                                                                                          len(g.labels)):
            raise ConfigError(f"{where}.gui: expected 1 <= min_buttons <= max_buttons <= "
                              f"min(columns * rows, len(labels))")
        _check_range(f"{where}.gui.padding", g.padding, 0)
        _check_range(f"{where}.gui.height", g.height, 4)
        slot_height = (self.canvas.gui[1] - g.title_bar) // g.rows
        if g.height[1] > slot_height:
            raise ConfigError(f"{where}.gui.height: {g.height[1]} px does not fit a slot of {slot_height} px")
        for key in ("screen_colour", "title_colour", "button_colour", "border_colour", "text_colour"):
            _check_rgb(f"{where}.gui.{key}", getattr(g, key))
        t = self.text
        if t.max_number < 2 or t.mul_max < 2 or len(t.names) < 2 or not t.items:
            raise ConfigError(f"{where}.text: expected max_number >= 2, mul_max >= 2, two names and an item")


@dataclass(frozen=True)
class ResizeSpec:
    """The processor's resize (Qwen2-VL smart_resize): coordinates refer to the resized image."""

    factor: int  # patch_size * merge_size
    min_pixels: int
    max_pixels: int

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the processor resizes a width x height image to."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        new_h, new_w = smart_resize(height, width, factor=self.factor, min_pixels=self.min_pixels,
                                    max_pixels=self.max_pixels)
        return new_w, new_h


def default_model() -> str:
    """The model group the root config (conf/config.yaml) composes when no `model=` override is given."""
    root = OmegaConf.load(CONF_DIR / "config.yaml")
    for entry in root.get("defaults", []):
        if isinstance(entry, DictConfig) and "model" in entry:
            return str(entry.model)
    raise ConfigError(f"{CONF_DIR / 'config.yaml'}: its defaults list names no `model` group")


def load_data_group(name: str, model: str | None = None) -> DictConfig:
    """conf/data/<name>.yaml with its `${model.*}` interpolations resolved against conf/model/<model>.yaml
    (default: default_model()), as the composed config resolves them."""
    from omegaconf.errors import OmegaConfBaseException

    model = model or default_model()
    root = OmegaConf.create({"model": load_group("model", model), "data": load_group("data", name)})
    try:
        return OmegaConf.create(OmegaConf.to_container(root.data, resolve=True))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"conf/data/{name}.yaml: cannot resolve it against model={model}: {exc}") from exc


def load_data_config(name: str = "synthetic", model: str | None = None) -> SynthConfig:
    """conf/data/<name>.yaml as a validated SynthConfig, following `model` (default: default_model())."""
    return validated(SynthConfig, load_data_group(name, model), where=f"data/{name}")


def load_resize_spec(model: str) -> ResizeSpec:
    """The resize of conf/model/<model>.yaml's `processor:` section."""
    cfg = load_group("model", model)
    where = f"model/{model}.processor"
    if "processor" not in cfg:
        raise ConfigError(f"{where}: missing (needed for the coordinates of synthetic grounding data)")
    values = {}
    for key in ("patch_size", "merge_size", "min_pixels", "max_pixels"):
        value = cfg.processor.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
        values[key] = value
    if values["min_pixels"] > values["max_pixels"]:
        raise ConfigError(f"{where}: min_pixels > max_pixels")
    return ResizeSpec(factor=values["patch_size"] * values["merge_size"],
                      min_pixels=values["min_pixels"], max_pixels=values["max_pixels"])
