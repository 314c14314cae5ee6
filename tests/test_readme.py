"""The documented first commands: README.md's Python snippet runs as written (a tiny saved model and tokenizer
files in place of the released ones: only the three paths are substituted); `make reproduce-mini` writes runs/."""

from __future__ import annotations

import re

import torch

from helpers import write_dict
from tests.conftest import REPO

RELEASED = ("checkpoints/Pre-trained-BioGPT/checkpoint.pt", "dict.txt", "bpecodes")


def test_readme_python_snippet_runs(tmp_path, capsys):
    from biogpt_train.checkpoint.io import save_native
    from biogpt_train.data.dictionary import Dictionary
    from biogpt_train.models.biogpt import ModelConfig, TransformerLM

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    code = blocks[0]
    letters = "abcdefghijklmnopqrstuvwxyz"
    letters += letters.upper()
    words = [".", "-", "1", *letters, *(c + "@@" for c in letters)]
    write_dict(tmp_path / "dict.txt", words)
    (tmp_path / "bpecodes").write_text("i n 10\n", encoding="utf-8")
    dictionary = Dictionary.load(tmp_path / "dict.txt")
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=len(dictionary), embed_dim=16, layers=1, heads=2, ffn_dim=32,
                                      max_positions=64))
    save_native(tmp_path / "checkpoint.pt", model, dictionary)
    for released, ours in zip(RELEASED, ("checkpoint.pt", "dict.txt", "bpecodes")):
        assert f'"{released}"' in code, released
        code = code.replace(f'"{released}"', repr(str(tmp_path / ours)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, scope["ids"].shape[1], len(dictionary))
    assert capsys.readouterr().out.strip()


def test_reproduce_mini_writes_to_runs_unless_asked():
    """`make reproduce-mini` must not overwrite the committed experiments/results/ (only with OUT=...)."""
    from experiments.reproduce_mini import build_parser

    assert build_parser().parse_args([]).out == REPO / "runs" / "reproduce_mini"
    assert "--out $(OUT)" in (REPO / "Makefile").read_text() and "OUT ?= runs/reproduce_mini" in \
        (REPO / "Makefile").read_text()
