"""The prompt text the MiMo-VL evaluation fork sends for text-answer benchmarks (boxed final answers)."""
from __future__ import annotations

from collections.abc import Sequence

BOXED = "Put your final answer in \\boxed{}."
SHORT_ANSWER = "Answer the question using a single word or phrase."
CHOOSE_LETTER = "Answer with the option's letter from the given choices."


def letters(count: int) -> list[str]:
    """Option letters A, B, ... for `count` options."""
    return [chr(ord("A") + i) for i in range(count)]


def choice_prompt(question: str, options: Sequence[str], hint: str | None = None) -> str:
    """Hint, question, lettered options, and the boxed-letter instruction."""
    lines = [hint] if hint else []
    lines.append(question)
    lines.append("Options:")
    lines.extend(f"{letter}. {option}" for letter, option in zip(letters(len(options)), options))
    lines.append(f"{CHOOSE_LETTER} {BOXED}")
    return "\n".join(lines)


def open_prompt(question: str) -> str:
    return f"{question}\n{BOXED}"
