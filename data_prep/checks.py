"""Checks made before any work starts, and the folding of repeated messages (one line each, with a count).

    check_writable_dir(path, what)     the output directory can be created and written, else OutputPathError
    parse_iso_date(value, option)      "YYYY-MM-DD" (a real calendar date) or None, else ValueError
    fold_repeats(messages)             identical messages once, "... (N times)"
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Union

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class OutputPathError(ValueError):
    """An output directory that cannot be created or written (named, with the reason)."""


def check_writable_dir(path: Union[str, os.PathLike], what: str = "out_dir") -> Path:
    """The absolute ``path`` if it is (or can be made) a writable directory; creates nothing.

    Checked before any input is read, so a typo in ``out_dir`` fails in a second, not after an hour of encoding.
    """
    target = Path(path).expanduser().absolute()
    probe = target
    while not probe.exists() and probe.parent != probe:  # the deepest part that exists decides
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{what} {target} cannot be created: {probe} exists and is not a directory; "
                              f"choose another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "it" if probe == target else f"its existing parent {probe}"
        raise OutputPathError(f"{what} {target} is not writable ({where} denies writing, or the file system is "
                              f"read-only); choose another {what} or fix its permissions")
    return target


def parse_iso_date(value, option: str) -> Optional[str]:
    """``value`` as ``YYYY-MM-DD`` (None stays None); any other spelling is an error.

    PubMed dates are compared as ISO strings, so ``01-01-2021`` or ``2021/01/01`` would silently keep the wrong
    set of records; only the ISO form is accepted (a date object from YAML is turned into it)."""
    if value is None:
        return None
    if isinstance(value, _dt.date):
        return value.isoformat()[:10]
    text = str(value).strip()
    if not _ISO_DATE.fullmatch(text):
        raise ValueError(f"{option}={value!r}: expected an ISO date YYYY-MM-DD, e.g. 2021-01-01 (no other "
                         "spelling is accepted: dates are compared as text)")
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option}={value!r} is not a calendar date (expected YYYY-MM-DD)") from None
    return text


def fold_repeats(messages: Iterable[str]) -> list[str]:
    """Each distinct message once, in first-seen order, with " (N times)" when it occurred more than once."""
    counts = Counter(messages)
    return [m if n == 1 else f"{m} ({n} times)" for m, n in counts.items()]
