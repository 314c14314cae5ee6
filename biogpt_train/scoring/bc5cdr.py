"""BC5CDR chemical-induced-disease (CID) relations: BioGPT's post-processing plus the BioCreative V CDR evaluator.

Post-processing (the original ``examples/RE-BC5CDR/postprocess.py``, reference §7.1, §7.6):
  * line cleanup and the BC5CDR prefix list (``biogpt_train.scoring.prefix``);
  * the answer is split on ``;`` (not ``"; "``), each piece stripped and matched with
    ``the relation between (.*) and (.*) exists`` (greedy, so a name containing " and " is cut at the last
    " and ");
  * names map to MeSH ids through the *corpus-wide* ``{split}.entities.json`` (case-sensitive, default ``-1``);
  * a line with no parsable relation is "failed" and contributes nothing.

Evaluator (``bc5cdr_eval.jar ... relation CID PubTator``), re-implemented without Java:
  * gold and predictions are *sets* of (document, id1, id2) for relation type CID: duplicates collapse;
  * ids are normalised: empty or ``-1`` becomes null, an id without ``:`` gets ``MESH:``; ids are case-sensitive;
  * a pair with a null id never matches (always a false positive); identical unmapped pairs of one document
    collapse into one false positive;
  * predictions for documents absent from the gold file are dropped (here: an error, see below);
  * micro P = TP/(TP+FP), R = TP/(TP+FN), F = 2PR/(P+R) in floating point, so 0/0 is NaN: no predictions gives
    P = NaN, R = 0, F = NaN; TP = 0 with FP > 0 gives P = 0, F = NaN.

Where we differ because the original crashes: an empty or whitespace-only prediction line (the original raises
IndexError) is counted as a failed line; more prediction lines than PMIDs (IndexError in the original) is a
clear error. NaN is returned as ``None`` (JSON ``null``). Where the original is silently lenient we refuse
(``alignment``): an id absent from the gold file, an id twice, or a gold document with CID relations but no line
(unless ``allow_missing``: its relations then count as false negatives, which is the official evaluator's rule).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Optional, Sequence, Union

from biogpt_train.scoring.alignment import align
from biogpt_train.scoring.files import PathLike, read_json, read_lines
from biogpt_train.scoring.prefix import answer_text

RELATION = re.compile(r"the relation between (.*) and (.*) exists")
_TITLE_OR_ABSTRACT = re.compile(r"^[^\t|]+\|[ta]\|")

Pair = tuple[str, Optional[str], Optional[str]]  # (document, chemical id, disease id), ids normalised


# ----------------------------------------------------------------------------------------- post-processing


def parse_relations(answer: str) -> list[tuple[str, str]]:
    """(chemical name, disease name) pairs of one answer, in order; empty when nothing parses."""
    pairs = []
    for piece in answer.split(";"):
        m = RELATION.match(piece.strip())
        if m is not None:
            pairs.append((m.group(1).strip(), m.group(2).strip()))
    return pairs


def load_entities(entities: Union[PathLike, Mapping]) -> dict:
    """``{"chemical2id": {name: id}, "disease2id": {name: id}}`` from a path or an already-loaded mapping."""
    ent = read_json(entities) if not isinstance(entities, Mapping) else entities
    for key in ("chemical2id", "disease2id"):
        if not isinstance(ent.get(key), Mapping):
            where = entities if not isinstance(entities, Mapping) else "entities mapping"
            raise ValueError(f"{where}: expected a {key!r} object mapping names to MeSH ids")
    return ent


def predicted_cid(
    pred_lines: Sequence[str], pmids: Sequence[str], entities: Mapping
) -> tuple[list[tuple[str, str, str]], int]:
    """The (pmid, chemical id, disease id) rows that ``postprocess.py`` writes, and the number of failed lines.

    Ids are the raw entity-map values (``-1`` for unmapped names), in line order, duplicates kept.
    """
    if len(pred_lines) > len(pmids):
        raise ValueError(
            f"bc5cdr: {len(pred_lines)} prediction lines but only {len(pmids)} PMIDs; the original "
            "postprocess.py fails here too (IndexError). Check that pred and pmids belong together."
        )
    chem, dis = entities["chemical2id"], entities["disease2id"]
    rows, failed = [], 0
    for line, pmid in zip(pred_lines, pmids):
        pairs = parse_relations(answer_text(line, "bc5cdr"))
        if not pairs:
            failed += 1
        for chemical, disease in pairs:
            rows.append((pmid, chem.get(chemical, "-1"), dis.get(disease, "-1")))
    return rows, failed


def pubtator_line(pmid: str, chemical_id: str, disease_id: str) -> str:
    """One prediction line as the original writes it (``.extracted.PubTator``)."""
    return f"{pmid}\tCID\t{chemical_id}\t{disease_id}\t1.0"


# -------------------------------------------------------------------------------------------- evaluator


def normalize_id(concept_id: Optional[str]) -> Optional[str]:
    """Evaluator id normalisation: empty / ``-1`` -> None; no ``:`` -> ``MESH:`` prefix; otherwise unchanged."""
    if concept_id is None:
        return None
    concept_id = concept_id.strip()
    if concept_id in ("", "-1"):
        return None
    return concept_id if ":" in concept_id else "MESH:" + concept_id


def read_pubtator(path: PathLike, relation_type: str = "CID") -> tuple[set[str], set[Pair]]:
    """Documents and normalised ``relation_type`` pairs of a PubTator file (gold, or predictions).

    Accepted lines: ``PMID|t|title``, ``PMID|a|abstract``, mention lines (>= 6 tab-separated columns with a
    numeric start offset), relation lines ``PMID<TAB>TYPE<TAB>ID1<TAB>ID2[<TAB>score]`` and blank lines.
    Anything else is an error naming the file and line. Relations of other types are ignored.
    """
    docs: set[str] = set()
    pairs: set[Pair] = set()
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        if _TITLE_OR_ABSTRACT.match(line):
            docs.add(line.split("|", 1)[0].strip())
            continue
        cols = line.split("\t")
        if len(cols) >= 6 and cols[1].strip().isdigit():
            docs.add(cols[0].strip())
        elif len(cols) in (4, 5) and not cols[1].strip().isdigit():
            doc = cols[0].strip()
            docs.add(doc)
            if cols[1].strip() == relation_type:
                pairs.add((doc, normalize_id(cols[2]), normalize_id(cols[3])))
        else:
            raise ValueError(
                f"{path}:{lineno}: not a PubTator line (title |t|, abstract |a|, mention with 6+ tab-separated "
                f"columns, or relation PMID<TAB>TYPE<TAB>ID1<TAB>ID2): {line[:120]!r}"
            )
    return docs, pairs


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan  # Java double 0/0


def evaluate_cid(pred: Iterable[Pair], gold_docs: set[str], gold: set[Pair]) -> dict:
    """TP/FP/FN and P/R/F (fractions, NaN where the Java evaluator prints NaN) over normalised pairs."""
    pred_set = {p for p in pred if p[0] in gold_docs}
    matchable = {p for p in pred_set if p[1] is not None and p[2] is not None}
    tp = len(matchable & gold)
    fp = len(pred_set) - tp
    fn = len(gold) - tp
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f = math.nan if math.isnan(p) or math.isnan(r) or p + r == 0 else 2 * p * r / (p + r)
    # Per gold document counts (they sum to the totals): the units a bootstrap over documents resamples.
    docs = sorted(gold_docs)
    hit = matchable & gold
    per_doc = {d: [0, 0, 0] for d in docs}
    for pair in hit:
        per_doc[pair[0]][0] += 1
    for pair in pred_set - hit:
        per_doc[pair[0]][1] += 1
    for pair in gold - hit:
        per_doc.setdefault(pair[0], [0, 0, 0])[2] += 1
    units = {"kind": "micro_f1", "tp": [c[0] for c in per_doc.values()], "fp": [c[1] for c in per_doc.values()],
             "fn": [c[2] for c in per_doc.values()]}
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f,
            "unmapped": len(pred_set) - len(matchable), "units": units}


def _percent(x: float) -> Optional[float]:
    return None if math.isnan(x) else 100.0 * x


def score_bc5cdr(pred_lines: Sequence[str], gold_path: PathLike, pmids: Optional[Sequence[str]] = None,
                 entities: Union[None, PathLike, Mapping] = None, allow_missing: bool = False,
                 pred_name: str = "the predictions", pmids_name: str = "pmids") -> dict:
    """Post-process decoded lines and evaluate them against a PubTator gold file; percentages, NaN -> None.

    Every gold document with a CID relation needs a line (``allow_missing``: its relations count as false
    negatives instead; ``unpredicted_docs`` counts them)."""
    if pmids is None or entities is None:
        raise ValueError("bc5cdr scoring needs pmids= (one PMID per prediction line, e.g. relis_test.pmid) and "
                         "entities= (the split's entities.json, e.g. test.entities.json)")
    ent = load_entities(entities)
    gold_docs, gold = read_pubtator(gold_path)
    required = sorted({doc for doc, _, _ in gold})
    _, unpredicted = align("bc5cdr", len(pred_lines), pmids, required, gold_docs, gold_path=gold_path,
                           pred_name=pred_name, pmids_name=pmids_name, allow_missing=allow_missing)
    rows, failed = predicted_cid(pred_lines, pmids, ent)
    pred = {(pmid, normalize_id(c), normalize_id(d)) for pmid, c, d in rows}
    stats = evaluate_cid(pred, gold_docs, gold)
    return {
        "precision": _percent(stats["precision"]),
        "recall": _percent(stats["recall"]),
        "f1": _percent(stats["f1"]),
        "tp": stats["tp"], "fp": stats["fp"], "fn": stats["fn"],
        "unmapped_pairs": stats["unmapped"],
        "lines": len(pred_lines),
        "failed_lines": failed,
        "unpredicted_docs": len(unpredicted),
        "units": stats["units"],
    }
