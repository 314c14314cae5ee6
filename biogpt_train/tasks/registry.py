"""The five BioGPT fine-tuning tasks as plain data: ``TASKS = {name: TaskSpec(...)}`` (reference §5.4, §7).

A TaskSpec says how a task is evaluated end to end:

* ``scorer`` / ``primary_metric``: the key of ``biogpt_train.scoring.SCORERS`` and the headline metric the paper
  reports (``paper_results.PRIMARY_METRIC``);
* ``answer_prefix``: the fixed text of the target template before the answer (classification tasks), used to
  read labels back from prepared ``.y`` lines;
* (the training recipe — prompt, lengths, LR, epochs, which checkpoint is evaluated — lives in one place only:
  ``conf/task`` and ``conf/experiment``; tests/test_configs.py checks the experiments against the paper's §5.4)
* ``gold``: per split, an ordered list of ``GoldRule``s. The first rule whose input exists gives the gold file;
  when none does, evaluation stops with an error listing every place it looked. Kinds:

  - ``file``: a raw file used as it is (``path`` relative to the raw directory; ``{split}``/``{fold}`` filled in);
  - ``pqa_json``: a PubMedQA split file (``{pmid: {..., "final_decision"}}``) turned into the
    ``test_ground_truth.json`` format ``{pmid: label}``;
  - ``prepared``: derived from the prepared ``{split}.y`` (+ ``.pmid`` / ``.x``) that data_prep wrote from the
    same raw labels (PubMedQA: ``{pmid: label}``; HoC: ``sentence<TAB>labels`` lines).

* ``gold_format``: what the scorer reads: ``pubtator`` (BC5CDR), ``biogpt_json`` (KD-DTI/DDI raw JSON keyed by
  document id), ``pqa_truth`` (``{pmid: label}``), ``hoc_tsv`` (``sentence<TAB>labels``).

Gold choices (why):
* BC5CDR is scored against the official PubTator files (the BioCreative evaluator's input), not BioGPT's JSON:
  ``CDR_DevelopmentSet.PubTator.txt`` for valid, ``CDR_TestSet.PubTator.txt`` for test. BioGPT's repo keeps
  ``CDR_Data`` inside ``raw/``, ../shared/data beside it; both places are tried. Names map to MeSH ids with the
  split's ``{split}.entities.json`` (data_prep copies it beside the prepared data).
* KD-DTI / DDI: BioGPT's raw ``{split}.json`` (never ``*_inputs.json``, which has no triples).
* PubMedQA: test = the official ``test_ground_truth.json``; valid/train = ``final_decision`` of the PQA-L fold
  files the split was made from; the prepared ``.y`` is the fallback (same labels, written by data_prep).
* HoC: test = ``test.tsv``; valid is whatever data_prep made it (BioGPT's ``valid.tsv`` = ``test.tsv``, or a
  sample of ``train.tsv``: data_prep/tasks/hoc.py), so its gold is derived from the prepared ``valid.y``/``valid.x``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from biogpt_train.tasks.paper_results import PRIMARY_METRIC

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class GoldRule:
    kind: str  # file | pqa_json | prepared
    path: str = ""  # relative to the raw directory ("{split}", "{fold}" filled in); unused for "prepared"

    def __post_init__(self):
        if self.kind not in GOLD_KINDS:
            raise ValueError(f"unknown gold rule kind {self.kind!r}; known: {GOLD_KINDS}")
        if (self.kind == "prepared") != (not self.path):
            raise ValueError(f"gold rule {self.kind!r}: {'no' if self.kind == 'prepared' else 'a'} path expected")


GOLD_KINDS = ("file", "pqa_json", "prepared")
GOLD_FORMATS = ("pubtator", "biogpt_json", "pqa_truth", "hoc_tsv")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    scorer: str  # key of biogpt_train.scoring.SCORERS
    primary_metric: str
    metrics: tuple[str, ...]  # the headline metrics the paper reports for the task
    answer_prefix: str  # target template text before the answer ("" for relation extraction)
    data_prep: str  # `python -m data_prep dataset=<data_prep>`
    raw_subdir: str  # the task's raw files under paths.shared (../shared/data)
    gold_format: str
    gold: Mapping[str, tuple[GoldRule, ...]]
    uses_pmids: bool  # the scorer aligns predictions by the prepared {split}.pmid
    uses_entities: bool  # bc5cdr: {split}.entities.json
    # data_prep settings (manifest.json "settings") the scorer must follow: {setting: scorer option}
    scorer_options_from_data: Mapping[str, str] = field(default_factory=dict)

    def gold_rules(self, split: str) -> tuple[GoldRule, ...]:
        if split not in self.gold:
            raise KeyError(f"{self.name}: no gold rules for split {split!r}; known splits: {sorted(self.gold)}")
        return self.gold[split]


def _both_cdr_places(name: str) -> tuple[GoldRule, ...]:
    # microsoft/BioGPT: data/BC5CDR/raw/CDR_Data/...; ../shared/data: BC5CDR/CDR_Data beside raw/
    return (GoldRule("file", f"CDR_Data/CDR.Corpus.v010516/{name}"),
            GoldRule("file", f"../CDR_Data/CDR.Corpus.v010516/{name}"))


def _re_json(split: str) -> tuple[GoldRule, ...]:
    names = {"train": ["train.json"], "valid": ["valid.json", "dev.json"], "test": ["test.json"]}[split]
    return tuple(GoldRule("file", n) for n in names)


def _pqa(split: str) -> tuple[GoldRule, ...]:
    stem = {"train": "train_set", "valid": "dev_set", "test": "test_set"}[split]
    rules = [GoldRule("file", "test_ground_truth.json")] if split == "test" else []
    if split == "test":
        rules += [GoldRule("pqa_json", "test_set.json"), GoldRule("pqa_json", "pqal_test_set.json")]
    else:
        rules += [GoldRule("pqa_json", f"pqal_fold{{fold}}/{stem}.json"), GoldRule("pqa_json", f"pqal_{stem}.json"),
                  GoldRule("pqa_json", f"{stem}.json")]
    return tuple(rules) + (GoldRule("prepared"),)


TASKS: dict[str, TaskSpec] = {
    "bc5cdr": TaskSpec(
        name="bc5cdr", scorer="bc5cdr", primary_metric="f1", metrics=("precision", "recall", "f1"),
        answer_prefix="", data_prep="bc5cdr", raw_subdir="BC5CDR/raw",
        gold_format="pubtator",
        gold={"train": _both_cdr_places("CDR_TrainingSet.PubTator.txt"),
              "valid": _both_cdr_places("CDR_DevelopmentSet.PubTator.txt"),
              "test": _both_cdr_places("CDR_TestSet.PubTator.txt")},
        uses_pmids=True, uses_entities=True,
    ),
    "kd_dti": TaskSpec(
        name="kd_dti", scorer="kd_dti", primary_metric="f1", metrics=("precision", "recall", "f1"),
        answer_prefix="", data_prep="kd_dti", raw_subdir="KD-DTI/raw",
        gold_format="biogpt_json", gold={s: _re_json(s) for s in SPLITS},
        uses_pmids=True, uses_entities=False, scorer_options_from_data={"target_format": "target_format"},
    ),
    "ddi": TaskSpec(
        name="ddi", scorer="ddi", primary_metric="f1", metrics=("precision", "recall", "f1"),
        answer_prefix="", data_prep="ddi", raw_subdir="DDI/raw",
        gold_format="biogpt_json", gold={s: _re_json(s) for s in SPLITS},
        uses_pmids=True, uses_entities=False, scorer_options_from_data={"target_format": "target_format"},
    ),
    "pubmedqa": TaskSpec(
        name="pubmedqa", scorer="pubmedqa", primary_metric="accuracy", metrics=("accuracy", "macro_f1"),
        answer_prefix="the answer to the question given the context is", data_prep="pubmedqa", raw_subdir="PubMedQA",
        gold_format="pqa_truth", gold={s: _pqa(s) for s in SPLITS},
        uses_pmids=True, uses_entities=False,
    ),
    "hoc": TaskSpec(
        name="hoc", scorer="hoc", primary_metric="micro_f1", metrics=("micro_f1",),
        answer_prefix="the type of this document is",
        data_prep="hoc", raw_subdir="HoC/raw", gold_format="hoc_tsv",
        gold={"train": (GoldRule("prepared"),), "valid": (GoldRule("prepared"),),
              "test": (GoldRule("file", "test.tsv"), GoldRule("prepared"))},
        uses_pmids=False, uses_entities=False,
    ),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[str(name)]
    except KeyError:
        raise KeyError(f"task {name!r} has no evaluation spec; known: {sorted(TASKS)}") from None


def _check_registry() -> None:
    """The table's invariants, checked at import (a real error, not an assert that `python -O` drops)."""
    for name, spec in TASKS.items():
        problems = [what for what, ok in (("name", spec.name == name),
                                          ("primary_metric", spec.primary_metric == PRIMARY_METRIC[name]),
                                          ("gold_format", spec.gold_format in GOLD_FORMATS),
                                          ("gold splits", set(spec.gold) == set(SPLITS))) if not ok]
        if problems:
            raise ValueError(f"biogpt_train/tasks/registry.py: TASKS[{name!r}] has an inconsistent {', '.join(problems)}")


_check_registry()

__all__ = ["TASKS", "TaskSpec", "GoldRule", "get_task", "SPLITS"]
