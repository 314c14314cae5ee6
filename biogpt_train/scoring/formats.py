"""Target formats for drug-target / drug-drug triples (KD-DTI, DDI): a template to render and a parser to read.

``rel-is`` is the format BioGPT trains and scores with (reference §7.2); its parser reproduces the original
``examples/RE-DTI/postprocess.py`` exactly: split the answer on ``"; "`` and match each piece with
``the interaction between (.*) and (.*) is (.*)`` (greedy groups: a drug name containing " and " is cut at the
last " and " that still leaves a `` is ``).

The other three are the paper's target-format ablation (Table 9). Their templates are the unused functions of the
original ``rebuild_data.py``; the original has **no parser** for them, so the parsers here are ours:
  * ``svo``  — ``{drug} {verb} {target}`` with ``verb = relation_to_verb(rel)``. The verb is looked up among the
    verbs of a known relation vocabulary (the KD-DTI and DDI labels below, then any the caller adds, e.g. the gold
    file's labels): the earliest verb occurrence wins, the longest verb on a tie; the relation reported is the
    first vocabulary label with that verb (``randomly works with`` -> ``other``).
  * ``is-of`` (alias ``isof``) — ``{drug} is the {rel} of {target}``: the drug ends at the first " is the "; the
    relation ends at the " of " that makes it the longest known relation, else at the first " of ".
  * ``htr`` — ``<h> {drug} <t> {target} <r> {rel}`` repeated, separated by spaces; markers may come back from
    Moses detokenisation as ``< h >``, so spaces inside the angle brackets are allowed.
Pieces that do not fit are skipped; a line with no triple is a failed line (as in the original).

Triples are ``(drug, target, relation)`` strings as they appear in the text (stripped, not normalised).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

Triple = tuple[str, str, str]

# Relation labels of KD-DTI (the 41 strings of valid.json, lower-cased; most frequent first) and DDI.
KNOWN_RELATIONS: tuple[str, ...] = (
    "inhibitor", "antagonist", "agonist", "modulator", "binder", "positive allosteric modulator", "cofactor",
    "activator", "ligand", "inducer", "antibody", "negative modulator", "adduct", "blocker", "other",
    "product of", "other/unknown", "chelator", "partial agonist", "allosteric modulator", "stimulator",
    "downregulator", "potentiator", "cross-linking/alkylation", "substrate", "intercalation", "chaperone",
    "partial antagonist", "multitarget", "enhancer", "suppressor", "weak inhibitor", "inverse agonist",
    "regulator", "unknown", "opener", "binding",
    "effect", "mechanism", "advise", "int",
)

_SPECIAL_VERBS = {
    "product of": "is the product of",
    "negative modulator": "negatively modulates",
    "other/unknown": "randomly works with",
    "other": "randomly works with",
    "incorporation into and destabilization": "incorporates into and destabilizates",
    "cross-linking/alkylation": "cross lines / alkylates",
    "antibody": "is the antibody of",
    "downregulator": "downregulates",
    "desensitize the target": "desensitizes",
    "protector": "protects",
    "inhibitor": "inhibits",
    "weak inhibitor": "weakly inhibits",
    "blocker": "blocks",
}


def relation_to_verb(relation: str) -> str:
    """The svo verb of a (lower-cased) relation, with the original ``map_relation_to_verb`` rules."""
    if relation in _SPECIAL_VERBS:
        return _SPECIAL_VERBS[relation]
    if relation.endswith("agonist") or relation.endswith("antagonist"):
        return relation + "s"
    if relation.endswith("or") or relation.endswith("er"):
        return relation[:-2] + "es"
    if relation.endswith("tion"):
        return relation[:-3] + "es"
    if relation.endswith("ing"):
        return relation[:-3] + "s"
    return relation + "s"


# ----------------------------------------------------------------------------------------------- render


def render_target(triples: Iterable[tuple[str, str, str]], fmt: str = "rel-is") -> str:
    """The target sentence for ``(drug, target, relation)`` triples (already in the wanted order), lower-cased."""
    fmt = canonical_format(fmt)
    parts = [(d.lower(), t.lower(), r.lower()) for d, t, r in triples]
    if not parts:
        raise ValueError("render_target: no triples (the original drops such documents)")
    if fmt == "htr":
        return " ".join(f"<h> {d} <t> {t} <r> {r}" for d, t, r in parts) + "."
    one = {
        "rel-is": lambda d, t, r: f"the interaction between {d} and {t} is {r}",
        "svo": lambda d, t, r: f"{d} {relation_to_verb(r)} {t}",
        "is-of": lambda d, t, r: f"{d} is the {r} of {t}",
    }[fmt]
    return "; ".join(one(*p) for p in parts) + "."


# ------------------------------------------------------------------------------------------------ parse

_RELIS = re.compile(r"the interaction between (.*) and (.*) is (.*)")
_HTR = re.compile(r"<\s*h\s*>(.*?)<\s*t\s*>(.*?)<\s*r\s*>(.*?)(?=<\s*h\s*>|$)")


def parse_relis(answer: str, relations: Sequence[str] = ()) -> list[Triple]:
    out = []
    for piece in answer.split("; "):
        m = _RELIS.match(piece)
        if m is not None:
            out.append((m.group(1).strip(), m.group(2).strip(), m.group(3).strip()))
    return out


def _verb_table(relations: Sequence[str]) -> dict[str, str]:
    table: dict[str, str] = {}
    for rel in list(KNOWN_RELATIONS) + list(relations):  # fixed KD-DTI/DDI choices first
        table.setdefault(relation_to_verb(rel.lower()), rel.lower())
    return table


def parse_svo(answer: str, relations: Sequence[str] = ()) -> list[Triple]:
    verbs = _verb_table(relations)
    out = []
    for piece in answer.split("; "):
        best = None  # (start, -len(verb), verb)
        for verb in verbs:
            m = re.search(r"(?<=\S) " + re.escape(verb) + r" (?=\S)", piece)
            if m is not None and (best is None or (m.start(), -len(verb)) < best[:2]):
                best = (m.start(), -len(verb), verb)
        if best is not None:
            start, _, verb = best
            drug, target = piece[:start], piece[start + len(verb) + 2:]
            out.append((drug.strip(), target.strip(), verbs[verb]))
    return out


def parse_isof(answer: str, relations: Sequence[str] = ()) -> list[Triple]:
    known = {r.lower() for r in list(relations) + list(KNOWN_RELATIONS)}
    out = []
    for piece in answer.split("; "):
        head, sep, rest = piece.partition(" is the ")
        if not sep or not head.strip():
            continue
        cuts = [m.start() for m in re.finditer(r"(?= of )", rest)]  # overlapping: "product of of x"
        if not cuts:
            continue
        known_cuts = [c for c in cuts if rest[:c].strip() in known]
        cut = max(known_cuts) if known_cuts else cuts[0]
        rel, target = rest[:cut].strip(), rest[cut + 4:].strip()
        if rel and target:
            out.append((head.strip(), target, rel))
    return out


def parse_htr(answer: str, relations: Sequence[str] = ()) -> list[Triple]:
    out = []
    for m in _HTR.finditer(answer):
        drug, target, rel = (g.strip() for g in m.groups())
        if drug and target and rel:
            out.append((drug, target, rel))
    return out


PARSERS: dict[str, Callable[[str, Sequence[str]], list[Triple]]] = {
    "rel-is": parse_relis,
    "svo": parse_svo,
    "is-of": parse_isof,
    "htr": parse_htr,
}
_ALIASES = {"relis": "rel-is", "rel_is": "rel-is", "isof": "is-of", "is_of": "is-of"}


def canonical_format(fmt: str) -> str:
    name = _ALIASES.get(fmt, fmt)
    if name not in PARSERS:
        raise ValueError(f"unknown target format {fmt!r}; known: {sorted(PARSERS)} (aliases {sorted(_ALIASES)})")
    return name


def parse_triples(answer: str, fmt: str = "rel-is", relations: Sequence[str] = ()) -> list[Triple]:
    """Triples of one answer (the text after the prompt) in the given target format."""
    return PARSERS[canonical_format(fmt)](answer, relations)
