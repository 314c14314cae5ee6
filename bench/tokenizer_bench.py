"""Tokenizer throughput: our ``Tokenizer.encode_batch`` vs ``transformers.BioGptTokenizer`` on the same texts.

Both sides run the same sacremoses Moses rules; we are faster because (1) our Moses class gives sacremoses'
output with less work (character-class sets frozen once, the non-breaking-prefix pass without a regex per token,
rules skipped for texts without their character: ``biogpt_train.data.tokenizer._moses_class``) and (2) BPE is
fastBPE in C++, batched, with each Moses token's ids memoised. "cold" = a freshly built tokenizer (empty BPE caches on both sides), "warm" =
the same texts again on the same object. The ids are compared too: a benchmark of a wrong tokenizer is worthless.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VOCAB = "BioGPT"

# Used only when ../shared/data has no texts (the tokenizer files are still needed).
BUILTIN = [
    "Naloxone reverses the antihypertensive effect of clonidine.",
    "In unanesthetized, spontaneously hypertensive rats the decrease in blood pressure and heart rate produced "
    "by intravenous clonidine, 5 to 20 micrograms/kg, was inhibited or reversed by nalozone, 0.2 to 2 mg/kg.",
    "Dendritic cells (DCs) and natural killer (NK) cells are central components of innate immunity.",
    "Can tailored interventions increase mammography use among HMO women?",
    "Anti-PD-1/PD-L1 antibodies improved overall survival (HR 0.71; 95% CI, 0.59-0.86; p<0.001).",
]


def _workloads(quick: bool) -> dict:
    n_sent, n_abs = (300, 100) if quick else (3000, 1000)
    out = {}
    hoc = SHARED / "HoC" / "raw" / "train.tsv"
    if hoc.exists():
        with open(hoc, encoding="utf-8") as f:
            out["HoC sentences"] = [line.split("\t")[0] for line, _ in zip(f, range(n_sent))]
    abstracts = []
    for rel in ("BC5CDR/raw/train.json", "KD-DTI/raw/valid.json"):
        p = SHARED / rel
        if p.exists():
            with open(p, encoding="utf-8") as f:
                abstracts += [r["abstract"] for r in json.load(f).values() if r.get("abstract")]
    if abstracts:
        out["PubMed abstracts"] = abstracts[:n_abs]
    if not out:
        out["built-in sample"] = BUILTIN * (20 if quick else 200)
    return out


def _time(fn):
    # Process CPU time: both sides are single-threaded, and CPU time is not inflated by other processes on a
    # shared machine (wall-clock on an idle machine is about the same).
    t0 = time.process_time()
    result = fn()
    return time.process_time() - t0, result


def run(quick: bool = False) -> str:
    title = "## Tokenizer: texts/s, `Tokenizer.encode_batch` vs `transformers.BioGptTokenizer`"
    dict_txt, codes = SHARED / "tokenizer" / VOCAB / "dict.txt", SHARED / "tokenizer" / VOCAB / "bpecodes"
    if not (dict_txt.exists() and codes.exists()):
        return f"{title}\n\nSkipped: needs {dict_txt} and {codes}.\n"
    from transformers import BioGptTokenizer

    from biogpt_train.data.tokenizer import Tokenizer, write_hf_vocab

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab_json, merges = write_hf_vocab(dict_txt, codes, tmp)
        for name, texts in _workloads(quick).items():
            ours = Tokenizer.from_files(dict_txt, codes)
            hf = BioGptTokenizer(str(vocab_json), str(merges))
            t_ours_cold, ids_ours = _time(lambda: ours.encode_batch(texts))
            t_hf_cold, ids_hf = _time(lambda: hf(texts, add_special_tokens=False)["input_ids"])
            t_ours_warm, _ = _time(lambda: ours.encode_batch(texts))
            t_hf_warm, _ = _time(lambda: hf(texts, add_special_tokens=False)["input_ids"])
            ntok = sum(map(len, ids_ours))
            for label, t_o, t_h in (("cold", t_ours_cold, t_hf_cold), ("warm", t_ours_warm, t_hf_warm)):
                rows.append(
                    f"| {name} | {label} | {len(texts)} | {ntok} | {len(texts) / t_o:,.0f} | {len(texts) / t_h:,.0f} "
                    f"| {t_h / t_o:.2f}x | {'yes' if ids_ours == ids_hf else 'NO'} |"
                )
    header = (
        "| workload | caches | texts | tokens | ours texts/s | HF texts/s | ours / HF | same ids |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    note = (
        f"Vocabulary {VOCAB} (../shared/data/tokenizer/{VOCAB}); one process, single-threaded, rates from process "
        "CPU time. Command: "
        f"`python -m bench --only tokenizer_bench{' --quick' if quick else ''}`."
    )
    return "\n".join([title, "", note, "", header, *rows, ""])


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
