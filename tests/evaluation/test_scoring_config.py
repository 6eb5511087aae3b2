"""ScoringConfig: conf/scoring/official.yaml holds the official rules' numbers; bad values name their key."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from conf import ConfigError, load_group
from evaluation.scoring_config import load_scoring_config, scoring_config_from


def test_official_rules():
    cfg = load_scoring_config("official")
    assert (cfg.refcoco.iou_threshold, cfg.chartqa.relative_tolerance, cfg.docvqa.anls_threshold) == (0.5, 0.05, 0.5)
    assert (cfg.charades_sta.recall_iou_thresholds, cfg.mmbench.circular_offset, cfg.confidence) == (
        [0.3, 0.5, 0.7], 1_000_000, 0.95)
    assert (cfg.mmmu.long_response_words, cfg.mmmu.float_decimals) == (5, 2)


@pytest.mark.parametrize("override, message", [
    ("docvqa.anls_treshold=0.5", "invalid key 'docvqa.anls_treshold'"),
    ("confidence=1.0", "confidence: must be in (0, 1)"),
    ("refcoco.iou_threshold=0", "refcoco.iou_threshold: must be in (0, 1]"),
    ("charades_sta.recall_iou_thresholds=[0.3,1.5]", "charades_sta.recall_iou_thresholds[1]: must be in (0, 1]"),
    ("mmbench.circular_offset=zero", "invalid key 'mmbench.circular_offset'"),
    ("math_verify.verify_timeout_s=0", "math_verify.verify_timeout_s: must be > 0 or null"),
])
def test_bad_values_name_the_key(override, message):
    cfg = OmegaConf.merge(load_group("scoring", "official"), OmegaConf.from_dotlist([override]))
    with pytest.raises(ConfigError) as error:
        scoring_config_from(cfg, where="conf/scoring/official.yaml")
    assert message in str(error.value) and "conf/scoring/official.yaml" in str(error.value)


def test_unknown_rule_set_lists_the_choices():
    with pytest.raises(ConfigError, match=r"no config scoring=lenient .* choices: \['official'\]"):
        load_scoring_config("lenient")


def test_the_root_config_composes_the_official_rules():
    from conf import compose

    assert scoring_config_from(compose()["scoring"]) == load_scoring_config("official")
