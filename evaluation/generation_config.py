"""The generation settings of the eval job (conf/eval/<suite>.yaml `generation:`), without torch: the
flow validates them at planning, and orchestration never imports torch."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from conf import ConfigError, validated


@dataclass
class GenerationConfig:
    """conf/eval/<suite>.yaml `generation:`."""

    batch_size: int = MISSING       # prompts decoded together
    max_new_tokens: int = MISSING   # generated tokens per prompt at most (the stopping <|im_end|> included)
    thinking: bool = MISSING        # default prompt form: open assistant turn (True) or the empty think block

    def check(self, where: str) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"{where}: batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"{where}: max_new_tokens must be >= 1, got {self.max_new_tokens}")


def generation_config_from(section, where: str = "eval.generation") -> GenerationConfig:
    """Validate the `generation:` section of an eval config (conf/eval/<suite>.yaml)."""
    return validated(GenerationConfig, section, where)
