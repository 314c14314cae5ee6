"""Mini reproduction: the whole BioGPT chain on real data, on CPU, in under 30 minutes (`make reproduce-mini`).

    python -m experiments.reproduce_mini [--out runs/reproduce_mini] [--time-scale 1.0]
    make reproduce-mini OUT=experiments/results      # replace the committed results

1. pretrain: `+experiment=mini_pretrain` learns an 8k-merge BPE on the real MEDLINE abstracts of
   ../shared/data/pretrain_corpus and pretrains a 4 x 192 decoder on them for a wall-clock budget;
2. fine-tune: `+experiment=mini_hoc`, `mini_pubmedqa`, `mini_ddi` prepare the real HoC, PubMedQA (PQA-L fold 0) and
   DDI training data with that BPE, fine-tune from the pretrained checkpoint (each task's BioGPT recipe with the
   mini model and a time budget), decode the dev split (HoC: the 997 train.tsv sentences data_prep holds out;
   PubMedQA: the 50 fold-0 dev questions; DDI: BioGPT's valid.json) and score it into results.json;
3. a small sweep: `+experiment=mini_pubmedqa +sweep=source_loss` with a shorter budget (loss on the whole sequence
   as BioGPT, or on the prompt and answer only), collected into its own table and plotted against the swept value;
4. contamination: 13-gram overlap between the pretraining corpus and the five tasks' test inputs;
5. the table (`experiments.collect`, with BioGPT's paper numbers and each task's majority-class baseline), the
   loss plots (`experiments.plots`) and a report with the command, the machine and the timings, in --out
   (runs/reproduce_mini by default, so a rerun never overwrites the committed experiments/results/).

Every step is an ordinary `python -m biogpt_train +experiment=NAME` run (runs/<name>/mini, BIOGPT_RUN_ID=mini), so
each one can be rerun or inspected on its own. A rerun starts those run directories afresh; prepared data in
data/mini/ is reused (--fresh-data prepares it again). --time-scale multiplies every training time budget
(e.g. 0.2 for a quick check of the chain); the committed results use 1.0.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "mini"
TASKS = ("hoc", "pubmedqa", "ddi")
# the small sweep: (experiment, preset, swept key, training budget in hours per point)
SWEEP = ("mini_pubmedqa", "source_loss", "task.mask_source_loss", 0.025)
# the five tasks' test inputs as provided in ../shared/data (labels are not provided)
TEST_INPUTS = {
    "bc5cdr": "BC5CDR/raw/test_inputs.json",
    "kd_dti": "KD-DTI/raw/test_inputs.json",
    "ddi": "DDI/raw/test_inputs.json",
    "pubmedqa": "PubMedQA/test_set_inputs.json",
    "hoc": "HoC/raw/test_inputs.txt",
}

def biogpt_train_cmd(overrides: list[str]) -> list[str]:
    """The command line of `python -m biogpt_train OVERRIDES`."""
    return [sys.executable, "-m", "biogpt_train", *overrides]


def run(cmd: list[str], log_path: Path, env: dict | None = None) -> float:
    """Run cmd, teeing its output into log_path; returns the wall-clock seconds; raises on failure."""
    shown = " ".join(cmd[3:] if cmd[1] == "-c" else cmd)
    print(f"\n$ {'python -m biogpt_train ' if cmd[1] == '-c' else ''}{shown}", flush=True)
    t0 = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"`{shown}` failed with exit code {rc}; its output is in {log_path}")
    return seconds


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _train_summary(run_dir: Path) -> dict:
    """Updates reached, last train/valid loss and tokens seen, from metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in recs if r["split"] == "train"]
    valid = [r for r in recs if r["split"] == "valid"]
    epochs = [r for r in recs if r["split"] == "train_epoch"]  # one per epoch, the last (partial) one included
    return {"updates": max((r["update"] for r in recs), default=0),
            "train_tokens": sum(r.get("ntokens", 0) for r in (epochs or train)),
            "last_train_loss": train[-1]["loss"] if train else None,
            "first_valid_loss": valid[0]["loss"] if valid else None,
            "last_valid_loss": valid[-1]["loss"] if valid else None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "reproduce_mini",
                        help="tables, plots, report (default: runs/reproduce_mini; --out experiments/results "
                             "replaces the committed results)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs", help="paths.runs")
    parser.add_argument("--data", type=Path, default=REPO / "data", help="paths.data (prepared data in DATA/mini)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="paths.shared")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every training time budget")
    parser.add_argument("--fresh-data", action="store_true", help="prepare DATA/mini again")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--no-sweep", action="store_true", help="skip the small sweep (step 3)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the tables, plots and report from the existing runs and OUT/summary.json")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, p in (("--shared", args.shared), ("pretrain corpus", args.shared / "pretrain_corpus")):
        if not p.exists():
            parser.error(f"{name}: {p} does not exist (the mini reproduction needs ../shared/data)")

    from omegaconf import OmegaConf

    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    info = machine()
    command = " ".join(["python -m experiments.reproduce_mini", *(argv or [])])
    previous = None
    if args.report_only:  # keep what the measured run recorded
        previous = json.loads((args.out / "summary.json").read_text(encoding="utf-8"))
        started, info, command = previous["started"], previous["machine"], previous["command"]
        args.time_scale = previous["time_scale"]
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.runs / "reproduce_mini_logs"  # each step's console output (not part of the committed results)
    common = [f"paths.runs={args.runs}", f"paths.data={args.data}", f"paths.shared={args.shared}"]
    env = {"BIOGPT_RUN_ID": RUN_ID}
    if args.fresh_data and (args.data / "mini").exists():
        shutil.rmtree(args.data / "mini")
    experiments = ["mini_pretrain"] + [f"mini_{t}" for t in args.tasks]
    for name in [] if args.report_only else experiments:  # this script's own run directories: start afresh
        shutil.rmtree(args.runs / name / RUN_ID, ignore_errors=True)

    def budget(name: str) -> list[str]:
        hours = OmegaConf.load(REPO / "conf" / "experiment" / f"{name}.yaml").trainer.stop_time_hours
        return [] if args.time_scale == 1.0 else [f"trainer.stop_time_hours={hours * args.time_scale:.5f}"]

    timings: dict[str, float] = {}
    for name in [] if args.report_only else experiments:
        timings[name] = run(biogpt_train_cmd([f"+experiment={name}", *common, *budget(name)]), logs / f"{name}.log",
                            env)
    sweep_dir = args.runs / SWEEP[0] / "sweeps" / f"{SWEEP[1]}_{RUN_ID}"
    if not args.no_sweep and not args.report_only:
        shutil.rmtree(sweep_dir, ignore_errors=True)
        hours = SWEEP[3] * args.time_scale
        timings[f"sweep {SWEEP[1]}"] = run(
            biogpt_train_cmd([f"+experiment={SWEEP[0]}", f"+sweep={SWEEP[1]}", *common,
                              f"trainer.stop_time_hours={hours:.5f}"]), logs / f"sweep_{SWEEP[1]}.log",
            {"BIOGPT_SWEEP_ID": RUN_ID})

    # contamination: the pretraining corpus (as data_prep read it) vs the five tasks' test inputs
    import yaml

    corpus_cfg = yaml.safe_load((REPO / "conf" / "experiment" / "mini_pretrain.yaml").read_text(encoding="utf-8"))
    corpus_glob = corpus_cfg["pipeline"]["prepare"]["raw_dir"].replace("${paths.shared}", str(args.shared))
    from data_prep.pubmed import find_inputs

    corpus = [str(p) for p in find_inputs(corpus_glob)]
    tests = [f"{task}={args.shared / rel}" for task, rel in TEST_INPUTS.items() if (args.shared / rel).exists()]
    timings["contamination"] = run([sys.executable, "-m", "experiments.contamination", "--corpus", *corpus,
                                    "--tests", *tests, "--out", str(args.out / "contamination.md")],
                                   logs / "contamination.log")

    # table and plots
    run_dirs = [args.runs / f"mini_{t}" / RUN_ID for t in args.tasks]
    t0 = time.perf_counter()
    run([sys.executable, "-m", "experiments.collect", *map(str, run_dirs), "--paper-model", "biogpt",
         "--out", str(args.out / "table")], logs / "collect.log")
    from experiments.plots import plot_loss

    plots = []
    for name in experiments:
        out = args.out / f"loss_{name}.png"
        plot_loss(args.runs / name / RUN_ID, out, title=f"{name} (mini reproduction)")
        plots.append(out.name)
    if not args.no_sweep:
        from experiments.plots import plot_sweep

        run([sys.executable, "-m", "experiments.collect", str(sweep_dir), "--paper-model", "biogpt",
             "--out", str(args.out / f"sweep_{SWEEP[1]}")], logs / "collect_sweep.log")
        out = args.out / f"sweep_{SWEEP[1]}.png"
        plot_sweep(sweep_dir, SWEEP[2], out, title=f"{SWEEP[0]}: {SWEEP[2]} (mini reproduction)")
        plots.append(out.name)
    timings["table_and_plots"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    if previous is not None:
        timings = previous["timings_s"]

    results = {t: json.loads((args.runs / f"mini_{t}" / RUN_ID / "results.json").read_text(encoding="utf-8"))
               for t in args.tasks}
    training = {name: _train_summary(args.runs / name / RUN_ID) for name in experiments}
    contamination = json.loads((args.out / "contamination.json").read_text(encoding="utf-8"))
    cis = {r["task"]: r for r in csv.DictReader(open(args.out / "table.csv", encoding="utf-8"))}
    summary = {"command": command, "started": started, "machine": info, "time_scale": args.time_scale,
               "timings_s": {k: round(v, 1) for k, v in timings.items()},
               "parameters": _parameters(args.runs / "mini_pretrain" / RUN_ID / "checkpoints" / "checkpoint_last.pt"),
               "training": training,
               "results": {t: {**_row(t, r), "ci95": [_num(cis.get(t, {}).get("ci95_low")),
                                                       _num(cis.get(t, {}).get("ci95_high"))]}
                           for t, r in results.items()},
               "sweep": None if args.no_sweep else {
                   "experiment": SWEEP[0], "preset": SWEEP[1], "param": SWEEP[2], "dir": str(sweep_dir),
                   "hours_per_point": SWEEP[3] * args.time_scale,
                   "points": [{"value": r.get("overrides"), **_row("pubmedqa", r)}
                              for r in (json.loads(p.read_text(encoding="utf-8"))
                                        for p in sorted(sweep_dir.glob("*/results.json")))]},
               "contamination": {t: {k: v for k, v in c.items() if k != "overlaps"}
                                 for t, c in contamination["tasks"].items()},
               "plots": plots}
    if previous is not None:
        summary["report_rebuilt_by"] = " ".join(["python -m experiments.reproduce_mini", *(argv or [])])
    from biogpt_train.utils import atomic_write

    sweep_md = None if args.no_sweep else (args.out / f"sweep_{SWEEP[1]}.md").read_text(encoding="utf-8")
    atomic_write(args.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(args.out / "README.md", report(summary, (args.out / "table.md").read_text(encoding="utf-8"),
                                                contamination, sweep_md))
    print((args.out / "README.md").read_text(encoding="utf-8"))
    print(f"mini reproduction done in {timings['total'] / 60:.1f} min; report, table and plots in {args.out}")
    return 0


def _parameters(checkpoint: Path) -> int:
    """Trainable parameters of the checkpoint's model (tied input/output embeddings counted once)."""
    from biogpt_train.checkpoint.io import build_model, read_checkpoint

    return int(sum(p.numel() for p in build_model(read_checkpoint(checkpoint)).parameters()))


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _versus(r: dict) -> str:
    """Where the majority-class baseline lies relative to our 95% interval."""
    low, high = (r.get("ci95") or [None, None])
    base = r.get("majority_baseline")
    if base is None or low is None or high is None:
        return "–"
    if low > base:
        return "above it (baseline below our 95% CI)"
    if high < base:
        return "below it (baseline above our 95% CI)"
    return "not distinguishable (baseline inside our 95% CI)"


def _row(task: str, r: dict) -> dict:
    from biogpt_train.tasks.paper_results import lookup

    baseline = r.get("baseline") or {}
    return {"split": r["split"], "examples": r["predictions"]["lines"], "primary_metric": r["primary_metric"],
            "ours": r["primary"], "metrics": {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))},
            "majority_baseline": baseline.get(r["primary_metric"]), "majority_prediction": baseline.get("prediction"),
            "paper_biogpt_test": lookup(task, "biogpt", r["primary_metric"])}


def _f(x, digits=2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


DEV_SPLITS = {
    "hoc": "997 sentences of train.tsv held out by data_prep (BioGPT's valid.tsv is its test set)",
    "pubmedqa": "PQA-L fold-0 dev_set.json (50 questions)",
    "ddi": "BioGPT's valid.json (the documents with at least one interaction)",
}


def report(s: dict, table_md: str, contamination: dict, sweep_md: str | None = None) -> str:
    m, t = s["machine"], s["timings_s"]
    pre = s["training"].get("mini_pretrain", {})
    lines = [
        "# Mini reproduction: results",
        "",
        f"Produced by `{s['command']}` (experiments/reproduce_mini.py; `make reproduce-mini` runs it), started "
        f"{s['started']}, {t['total'] / 60:.1f} min in total"
        + (f"; tables, plots and this report rebuilt from its runs by `{s['report_rebuilt_by']}`"
           if s.get("report_rebuilt_by") else "") + ".",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m['torch_threads']} torch threads, "
        f"Python {m['python']}, torch {m['torch']}, {m['platform']}; load average at the start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'] or [])}"
        + (f"; training budgets × {s['time_scale']}" if s["time_scale"] != 1.0 else "") + ".",
        "",
        "**What this is.** A check that the whole chain runs on real data: BPE learning and pretraining on real "
        "MEDLINE abstracts, fine-tuning on the real HoC, PubMedQA and DDI training data with BioGPT's task "
        "recipes (learned prompts, target formats; the loss on prompt + answer only, see the sweep below), greedy "
        "decoding of the dev splits, BioGPT's post-processing and scoring. The model has "
        f"{s['parameters'] / 1e6:.1f}M parameters (BioGPT: 347M) and was pretrained on "
        f"{pre.get('train_tokens', 0) / 1e6:.2f}M tokens (BioGPT: about 105 billion, 200k updates of 524,288), on "
        "CPU for minutes. **These are small-model numbers, not a reproduction of the paper's**: they are not "
        "expected to approach BioGPT's, and each row has to be read next to its majority-class baseline (every "
        "example given the most frequent training answer, scored the same way). A row at the baseline means the "
        "model learned the answer format and the majority answer, nothing more. The paper's numbers are BioGPT's "
        "on the *test* sets; ours are on dev splits, because the test labels are not provided.",
        "",
        "## Table",
        "",
        table_md.strip(),
        "",
        "| task | dev split | examples | ours (95% CI) | majority-class baseline (its answer) | ours vs baseline "
        "| BioGPT, paper (test) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for task, r in s["results"].items():
        low, high = r.get("ci95") or [None, None]
        lines.append(f"| {task} | {DEV_SPLITS.get(task, r['split'])} | {r['examples']} | {r['primary_metric']} "
                     f"{_f(r['ours'])} [{_f(low)}, {_f(high)}] | {_f(r['majority_baseline'])} "
                     f"(“{r['majority_prediction']}”) | {_versus(r)} | {_f(r['paper_biogpt_test'])} |")
    lines += ["", "The 95% intervals are percentile bootstraps over the evaluated documents (experiments/bootstrap.py);"
              " with 41-50 dev documents they are wide.", "",
              "A limit of the mini vocabulary: its BPE, learned on the abstracts, has no symbol for `&` or `#`, so "
              "the label separator of HoC's multi-label answers (`|`, which Moses writes `&#124;`) becomes `<unk>`; "
              "the 5% of sentences with several hallmarks (466 of train.tsv's 9,972 lines) cannot be answered "
              "exactly. BioGPT's vocabulary has the symbol.", "", "## Training", "",
              "| run | updates | training tokens in the loss | valid loss first → last (bits/token) "
              "| wall clock (s) |",
              "|---|---:|---:|---|---:|"]
    for name, tr in s["training"].items():
        lines.append(f"| {name} | {tr.get('updates', '–')} | {tr.get('train_tokens', 0):,} | "
                     f"{_f(tr.get('first_valid_loss'))} → {_f(tr.get('last_valid_loss'))} | {t.get(name, 0):.0f} |")
    lines += ["", "Each training run stops at its wall-clock budget (`trainer.stop_time_hours` in "
              "conf/experiment/mini_*.yaml), so the number of updates depends on the machine's speed and load. Wall "
              "clock includes data preparation, decoding and scoring. With the loss on prompt + answer only, the "
              "fine-tuning losses and token counts are over those tokens.", ""]
    lines += [f"![{p}]({p})" for p in s["plots"] if p.startswith("loss_")]
    if sweep_md and s.get("sweep"):
        sw = s["sweep"]
        lines += ["", f"## A small sweep: `+experiment={sw['experiment']} +sweep={sw['preset']}`", "",
                  f"`{sw['param']}` false (BioGPT: loss on every token, source included) and true (loss on the "
                  f"prompt and answer only, as the rows above), {sw['hours_per_point'] * 60:.1f} min of fine-tuning "
                  "per point (shorter than the row above). A hypothesis that never reaches an answer counts as "
                  "wrong, as in BioGPT's scoring."
                  f" Run directories: `{Path(sw['dir']).name}/<job>_<overrides>`.", "", sweep_md.strip(), ""]
        lines += [f"![{p}]({p})" for p in s["plots"] if p.startswith("sweep_")]
    lines += ["", "## Contamination (13-gram overlap, pretraining corpus vs test inputs)", "",
              f"{contamination['corpus_documents']} corpus documents against each task's test inputs as provided in "
              "../shared/data (experiments/contamination.py; details in [contamination.md](contamination.md)).", "",
              "| task | test documents | with any shared 13-gram | % |", "|---|---:|---:|---:|"]
    for task, c in s["contamination"].items():
        pct = 100.0 * c["contaminated"] / max(c["test_documents"], 1)
        lines.append(f"| {task} | {c['test_documents']} | {c['contaminated']} | {pct:.2f} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
