"""The first two steps of every original ``postprocess.py``: line cleanup and prefix stripping (reference §7).

A decoded line is ``source learned1 ... learnedN answer`` (or ``source <manual prompt> answer``). The original
scripts cut everything up to the prompt by trying a list of regex patterns in order; at the first pattern that
occurs anywhere in the line they keep what follows its *last* occurrence (``re.split(p, line)[-1]``).

The BC5CDR list differs from the others: it holds the tokenised manual prompt ``in conclusion ,`` (so a
detokenised ``in conclusion,`` is not stripped there), listed second; the other four tasks list
``in conclusion,`` last.
"""

from __future__ import annotations

import re

LEARNED = r"(learned[0-9]+ )+"

PREFIXES: dict[str, tuple[str, ...]] = {
    "bc5cdr": (LEARNED, "in conclusion ,", "we can conclude that", "we have that"),
    "kd_dti": (LEARNED, "we can conclude that", "we have that", "in conclusion,"),
    "ddi": (LEARNED, "we can conclude that", "we have that", "in conclusion,"),
    "pubmedqa": (LEARNED, "we can conclude that", "we have that", "in conclusion,"),
    "hoc": (LEARNED, "we can conclude that", "we have that", "in conclusion,"),
}


def clean_line(line: str) -> str:
    """Strip the line and drop one final ``.``, if any (only one: ``yes..`` becomes ``yes.``)."""
    line = line.strip()
    return line[:-1] if line.endswith(".") else line


def strip_prefix(line: str, patterns: tuple[str, ...]) -> str:
    """The text after the last occurrence of the first pattern that occurs in ``line``, stripped.

    The line is returned unchanged when no pattern occurs. A pattern's capture groups do not matter: the text
    after the last match is always the final element of ``re.split``.
    """
    for pattern in patterns:
        if re.search(pattern, line) is not None:
            return re.split(pattern, line)[-1].strip()
    return line


def answer_text(line: str, task: str) -> str:
    """``clean_line`` then ``strip_prefix`` with the task's pattern list: the part the task's parser reads."""
    try:
        patterns = PREFIXES[task]
    except KeyError:
        raise KeyError(f"no prefix patterns for task {task!r}; known: {sorted(PREFIXES)}") from None
    return strip_prefix(clean_line(line), patterns)
