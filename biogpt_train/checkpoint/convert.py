"""Convert between checkpoint formats, for every model family.

    python -m biogpt_train.convert SRC DST [--to native|hf] [--dict PATH] [--bpecodes PATH]

SRC: fairseq checkpoint.pt, an HF directory (BioGPT, Llama, ELECTRA/BERT) or a native .pt (auto-detected).
DST: a native .pt file or an HF directory (default: native when DST ends in .pt, else hf). The tokenizer travels
with the weights: BioGPT's dictionary (stored in SRC, --dict, or dict.txt beside SRC) and BPE codes (stored in a
native SRC, --bpecodes, or bpecodes/merges.txt beside SRC); tokenizer.model (Llama) and vocab.txt (encoders) from
SRC. Weights without a tokenizer convert too, with a warning that none was included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biogpt_train.checkpoint.io import (
    CheckpointError,
    build_model,
    export_hf,
    learned_prompt_count,
    load_dictionary,
    read_checkpoint,
    save_native,
)


def find_bpecodes(src: Path) -> Path | None:
    """bpecodes beside a checkpoint file, or merges.txt (identical content) inside / beside an HF directory."""
    folder = src if src.is_dir() else src.parent
    for name in ("bpecodes", "merges.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def _describe(loaded, model) -> str:
    c = loaded.model_config
    return (f"read {loaded.source_format} {loaded.family} checkpoint {loaded.path}: {c.layers} layers, "
            f"d={c.embed_dim}, {c.heads} heads, vocab {c.vocab_size}, "
            f"{sum(p.numel() for p in model.parameters()):,} parameters")


def convert(src, dst, to: str | None = None, dict_path=None, bpecodes=None) -> str:
    """Do the conversion; return a one-paragraph description of what was done."""
    src, dst = Path(src), Path(dst)
    to = to or ("native" if dst.suffix == ".pt" else "hf")
    if to not in ("native", "hf"):
        raise ValueError(f"--to must be native or hf, not {to!r}")
    loaded = read_checkpoint(src)
    model = build_model(loaded)
    what = _describe(loaded, model)
    files = dict(loaded.tokenizer_files or {})
    dictionary = None
    if loaded.family == "biogpt":
        try:
            dictionary = load_dictionary(loaded, dict_path)
        except CheckpointError as e:
            if dict_path is not None or "no dictionary inside" not in str(e):
                raise
        if dictionary is None:
            what += "; no dictionary (none stored, none beside it, no --dict): weights and config only"
        else:
            origin = dict_path or (f"stored in {src}" if loaded.dictionary_symbols is not None else f"beside {src}")
            what += f"; dictionary of {len(dictionary)} symbols ({origin})"
            learned = learned_prompt_count(loaded.cfg)
            if learned and dictionary[len(dictionary) - 1] == f"learned{learned}":
                what += f", the last {learned} being the learned prompt tokens learned1..learned{learned}"
        codes = Path(bpecodes) if bpecodes else (None if "bpecodes" in files or "merges.txt" in files
                                                 else find_bpecodes(src))
        if bpecodes and not codes.is_file():
            raise CheckpointError(f"--bpecodes {bpecodes}: no such file")
        if codes is not None:
            files["bpecodes"] = codes.read_bytes()
    elif dict_path or bpecodes:
        raise CheckpointError(f"--dict/--bpecodes apply to BioGPT checkpoints; {src} is a {loaded.family} model")
    if not files:
        what += "; no tokenizer files"
    if to == "native":
        cfg_out = loaded.cfg if loaded.source_format != "hf" else None
        save_native(dst, model, dictionary, cfg=cfg_out, tokenizer_files=files)
        return what + f"\nwrote native checkpoint {dst}" + (" (with " + ", ".join(sorted(files)) + ")" if files else "")
    export_hf(model, dictionary, None, dst, tokenizer_files=files)
    return what + f"\nwrote HF directory {dst}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biogpt_train.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--to", choices=["native", "hf"], help="output format (default: from DST's suffix)")
    parser.add_argument("--dict", dest="dict_path", help="dict.txt to use (default: stored in SRC or beside it)")
    parser.add_argument("--bpecodes", help="fastBPE codes for HF merges.txt (default: beside SRC)")
    args = parser.parse_args(argv)
    try:
        print(convert(args.src, args.dst, args.to, args.dict_path, args.bpecodes))
    except (ValueError, OSError) as e:  # CheckpointError is a ValueError; also malformed dict.txt, missing files
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
