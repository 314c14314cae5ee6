"""The benchmark harness works (imports, interleaving, the report writer); speed itself is never asserted here."""

import importlib

import pytest
import torch

from bench import __main__ as bench_main
from bench.common import interleave, median_time, peak_mem, spread_note


@pytest.mark.parametrize("name", list(bench_main.BENCHMARKS))
def test_every_listed_benchmark_imports_and_has_run(name):
    module = importlib.import_module(name)
    assert callable(module.run), f"{name} must expose run(quick: bool) -> str"


def test_section_timer_imports():  # a developer tool beside the report (python -m bench.trainer_sections)
    module = importlib.import_module("bench.trainer_sections")
    assert callable(module.main) and module.SECTIONS == ("fwd", "loss", "bwd", "norm", "opt")


def test_interleave_alternates_and_reports_each_side():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    res = interleave(runners, torch.device("cpu"), min_rounds=3, max_rounds=3, max_seconds=60)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # one memory call each, then the order flips
    assert res["rounds"] == 3 and set(res["runs"]) == {"a", "b"}
    assert all(len(v) == 3 for v in res["runs"].values())
    assert median_time(res["runs"]["a"]) >= 0 and peak_mem(res["runs"]["a"]) >= 0
    assert spread_note(0.5).endswith("(not < 10%)") and spread_note(0.05) == "5%"


def test_interleave_takes_times_measured_elsewhere():
    """trainer_bench's sides run in their own processes and report (seconds, mem) themselves."""
    calls = []

    def side(name, seconds):
        def run(memory):
            calls.append((name, memory))
            return seconds, (0.5 if memory else 0.0)
        return run

    res = interleave({"a": side("a", 1.0), "b": side("b", 2.0)}, torch.device("cpu"), min_rounds=2, max_rounds=2,
                     max_seconds=60, measure=lambda runner, device, memory: runner(memory))
    # memory is taken in one untimed call per side (its sampler would slow the timed ones)
    assert calls == [("a", True), ("b", True), ("a", False), ("b", False), ("b", False), ("a", False)]
    assert res["runs"] == {"a": [(1.0, 0.5), (1.0, 0.5)], "b": [(2.0, 0.5), (2.0, 0.5)]}


def test_report_writer_runs_selected_modules(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_main, "BENCHMARKS", {"tests.test_bench_tools": "a fake benchmark"})
    out = tmp_path / "r.md"
    assert bench_main.main(["--only", "test_bench_tools", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Machine:" in text and "## fake section" in text


def run(quick: bool = False) -> str:  # the fake benchmark module used above
    return "## fake section\n"


def test_cpu_step_memory_sees_blocks_the_heap_reuses():
    """With trainer.cpu_keep_freed_memory a step's large blocks come from the heap without raising RSS; the bench
    reads glibc's bytes in use instead, so a 64 MiB tensor alive during the call still counts."""
    import time

    from bench.common import timed
    from biogpt_train.train.allocator import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc")
    torch.empty(2**24).fill_(1)  # 64 MiB, freed into the heap before the timed call
    _, gb = timed(lambda: (torch.empty(2**24).fill_(1), time.sleep(0.05)), torch.device("cpu"), memory=True)
    assert gb >= 0.06
