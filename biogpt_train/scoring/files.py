"""Reading the text inputs of the scorers.

Every file is read in text mode with universal newlines, like the original Python scripts: CRLF and lone CR
line ends read as LF, so a CRLF file scores exactly as its LF copy. Iterating the file object (not
``str.splitlines``) keeps that equivalence: ``splitlines`` would also break at form feeds and U+2028.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence, Union

PathLike = Union[str, os.PathLike]


def read_lines(path: PathLike) -> list[str]:
    """The lines of a UTF-8 text file, line ends removed (nothing else is stripped)."""
    with open(path, "r", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def read_json(path: PathLike):
    with open(path, "r", encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def read_pmids(path: PathLike) -> list[str]:
    """A document-id file as the original scripts read it.

    A name containing ``.json`` is a JSON list; anything else holds one id per line, each stripped. Blank lines
    are kept (as empty ids, which match no gold document), so positions stay aligned with the predictions.
    """
    if ".json" in os.path.basename(str(path)):
        ids = read_json(path)
        if not isinstance(ids, list):
            raise ValueError(f"{path}: a JSON pmids file must hold a list of ids, found {type(ids).__name__}")
        return [str(i) for i in ids]
    return [line.strip() for line in read_lines(path)]


def as_lines(pred_lines: Union[PathLike, Iterable[str]]) -> list[str]:
    """Predictions given as a path (str or PathLike: the file is read) or as in-memory lines.

    In-memory lines may keep their line end (``\\n`` or ``\\r\\n``); it is removed. (Every scorer strips each
    line anyway, so line ends never change a score.)
    """
    if isinstance(pred_lines, (str, os.PathLike)):
        return read_lines(pred_lines)
    return [line.rstrip("\r\n") for line in pred_lines]


def as_pmids(pmids: Union[None, PathLike, Sequence[str]]) -> Union[None, list[str]]:
    if pmids is None:
        return None
    if isinstance(pmids, (str, os.PathLike)):
        return read_pmids(pmids)
    return [str(p).strip() for p in pmids]
