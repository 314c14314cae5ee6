"""The BioGPT paper's reported numbers, as plain data for the experiment tables (reference §8).

Percentages as printed in the paper. Every entry names its ``source`` (the paper's table). Metric keys match what
``biogpt_train.scoring.score`` returns: relation extraction ``precision`` / ``recall`` / ``f1`` (KD-DTI and DDI:
averages over documents), PubMedQA ``accuracy``, HoC ``micro_f1``.

Sources: arXiv 2210.10341 / Briefings in Bioinformatics 23(6) bbac409. The main-result tables are named by task;
"Table 9" (target format) and "Table 11" (BioGPT-Large, appendix) follow the reference's numbering.
"""

from __future__ import annotations

_MAIN = "main results"

# model -> task -> metrics (+ source)
MAIN_RESULTS: dict[str, dict[str, dict]] = {
    "biogpt": {
        "bc5cdr": {"precision": 49.44, "recall": 41.28, "f1": 44.98, "source": f"{_MAIN}: BC5CDR end-to-end RE table"},
        "kd_dti": {"precision": 40.00, "recall": 39.72, "f1": 38.42, "source": f"{_MAIN}: KD-DTI end-to-end RE table"},
        "ddi": {"precision": 41.70, "recall": 44.75, "f1": 40.76, "source": f"{_MAIN}: DDI end-to-end RE table"},
        "pubmedqa": {"accuracy": 78.2, "source": f"{_MAIN}: PubMedQA table (reasoning-required)"},
        "hoc": {"micro_f1": 85.12, "source": f"{_MAIN}: HoC table"},
    },
    # BioGPT trained on train+valid (the dagger rows); only BC5CDR reports it.
    "biogpt_trainval": {
        "bc5cdr": {"precision": 49.52, "recall": 43.25, "f1": 46.17,
                   "source": f"{_MAIN}: BC5CDR table, BioGPT† (train+valid)"},
    },
    "biogpt_large": {
        "bc5cdr": {"f1": 50.12, "source": "Table 11 (appendix, BioGPT-Large)"},
        "kd_dti": {"f1": 38.39, "source": "Table 11 (appendix, BioGPT-Large)"},
        "ddi": {"f1": 44.89, "source": "Table 11 (appendix, BioGPT-Large)"},
        "pubmedqa": {"accuracy": 81.0, "source": "Table 11 (appendix, BioGPT-Large)"},
        # Table 11 labels it "F1"; HoC's metric is micro-F1 throughout the paper.
        "hoc": {"micro_f1": 84.40, "source": "Table 11 (appendix, BioGPT-Large)"},
    },
}

# KD-DTI target-format ablation (prompt fixed at 9 learned tokens). Keys are the ``format=`` names of the scorer.
# Note that its rel-is row (38.38 F1) differs from the main KD-DTI table (38.42).
KD_DTI_TARGET_FORMAT: dict[str, dict] = {
    "htr": {"precision": 38.21, "recall": 40.21, "f1": 37.32, "label": "<head> h <tail> t <relation> r"},
    "svo": {"precision": 37.95, "recall": 37.77, "f1": 36.57, "label": "svo"},
    "is-of": {"precision": 39.37, "recall": 39.11, "f1": 37.77, "label": "is-of"},
    "rel-is": {"precision": 38.93, "recall": 40.70, "f1": 38.38, "label": "rel-is"},
}
KD_DTI_TARGET_FORMAT_SOURCE = "Table 9 (target format ablation on KD-DTI)"

# Structured (htr-like) target vs rel-is on the other RE tasks, F1 only.
STRUCTURED_VS_RELIS: dict[str, dict] = {
    "bc5cdr": {"structured": 42.85, "rel-is": 44.98},
    "ddi": {"structured": 38.60, "rel-is": 40.76},
}
STRUCTURED_VS_RELIS_SOURCE = "target format ablation, text (BC5CDR and DDI)"

# KD-DTI prompt ablation (rel-is target). Keys: manual prompt text, or "soft_N" for N learned tokens.
KD_DTI_PROMPT: dict[str, dict] = {
    "we have that": {"precision": 38.55, "recall": 38.37, "f1": 36.95},
    "in conclusion,": {"precision": 39.03, "recall": 39.45, "f1": 37.76},
    "we can conclude that": {"precision": 39.56, "recall": 39.88, "f1": 38.16},
    "soft_1": {"precision": 39.50, "recall": 39.71, "f1": 38.06},
    "soft_5": {"precision": 39.57, "recall": 39.63, "f1": 38.09},
    "soft_9": {"precision": 38.93, "recall": 40.70, "f1": 38.38},
    "soft_13": {"precision": 39.48, "recall": 39.17, "f1": 38.60},
    "soft_17": {"precision": 39.82, "recall": 39.60, "f1": 38.28},
}
KD_DTI_PROMPT_SOURCE = "prompt ablation table on KD-DTI (length 9 chosen on validation)"

# BioM-Transformers (Alrowili & Vijay-Shanker, BioNLP 2021) and its model cards (seed-systems.md §A), keyed like
# MAIN_RESULTS by our model label (conf/model arch) and task. squad: SQuAD2.0 dev EM/F1 of the TF checkpoints
# (README). bioasq: strict/lenient/MRR = mean over the five BioASQ7B test batches of the TF SQuAD2 -> BioASQ7B
# notebook (our arithmetic over its per-batch outputs); exact/f1 = the HF card's "unofficial" PyTorch numbers on
# all five BioASQ8B test batches concatenated (another test set and recipe: compare EM/F1 with care).
_BIOM_CARD = "HF card sultan/BioM-ELECTRA-Large-SQuAD2-BioASQ8B (BioASQ8B test batches concatenated, unofficial)"
BIOM_RESULTS: dict[str, dict[str, dict]] = {
    "biom_electra_large": {
        "squad": {"exact": 85.48, "f1": 88.27, "source": "BioM-Transformers README: BioM-ELECTRA-Large-SQuAD2, dev"},
        "bioasq": {"strict": 50.10, "lenient": 61.18, "mrr": 54.65, "exact": 74.31, "f1": 84.72,
                   "source": "BioM notebook SQuAD2 -> BioASQ7B (strict/lenient/MRR, mean of 5 batches); "
                             + _BIOM_CARD + " (exact/f1)"},
    },
    "biom_electra_base": {
        "squad": {"exact": 81.35, "f1": 84.20, "source": "BioM-Transformers README: BioM-ELECTRA-Base-SQuAD2, dev"},
        "bioasq": {"exact": 70.31, "f1": 80.90, "source": _BIOM_CARD},
    },
    "electra_large": {"bioasq": {"exact": 67.36, "f1": 78.90, "source": _BIOM_CARD}},
    "electra_base": {"bioasq": {"exact": 61.89, "f1": 74.39, "source": _BIOM_CARD}},
}
# BioM-ELECTRA-Large-SQuAD2 -> BioASQ7B per test batch (strict, lenient, MRR), TF notebook
BIOM_BIOASQ7B_BATCHES = [(51.28, 56.41, 53.08), (56.00, 64.00, 59.00), (41.38, 51.72, 45.98),
                         (64.71, 82.35, 72.55), (37.14, 51.43, 42.62)]

PAPER_RESULTS: dict[str, dict] = {
    "biom": BIOM_RESULTS,
    "main": MAIN_RESULTS,
    "kd_dti_target_format": {"source": KD_DTI_TARGET_FORMAT_SOURCE, "rows": KD_DTI_TARGET_FORMAT},
    "structured_vs_relis": {"source": STRUCTURED_VS_RELIS_SOURCE, "rows": STRUCTURED_VS_RELIS},
    "kd_dti_prompt": {"source": KD_DTI_PROMPT_SOURCE, "rows": KD_DTI_PROMPT},
}

# Headline metric per task (what the paper bolds).
PRIMARY_METRIC = {"bc5cdr": "f1", "kd_dti": "f1", "ddi": "f1", "pubmedqa": "accuracy", "hoc": "micro_f1",
                  "squad": "f1", "bioasq": "mrr"}


def lookup(task: str, model: str = "biogpt", metric: str | None = None) -> float | None:
    """A main-table number, e.g. ``lookup("ddi")`` -> 40.76 (the task's headline metric unless ``metric`` is
    given); None when the paper does not report it for that model. Encoder rows come from BIOM_RESULTS."""
    row = MAIN_RESULTS.get(model, {}).get(task) or BIOM_RESULTS.get(model, {}).get(task)
    if row is None:
        return None
    return row.get(metric or PRIMARY_METRIC[task])
