"""Convert between checkpoint formats.

    python -m biogpt_train.convert SRC DST [--to native|hf] [--dict PATH] [--bpecodes PATH]

SRC: fairseq checkpoint.pt, HF directory or native .pt (auto-detected). DST: a native .pt file or an HF
directory (default: native when DST ends in .pt, else hf). Without --dict / --bpecodes the dictionary stored
in SRC (native, HF vocab.json) or dict.txt beside SRC is used, and bpecodes / merges.txt beside SRC.
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


def convert(src, dst, to: str | None = None, dict_path=None, bpecodes=None) -> str:
    """Do the conversion; return a one-paragraph description of what was done."""
    src, dst = Path(src), Path(dst)
    to = to or ("native" if dst.suffix == ".pt" else "hf")
    loaded = read_checkpoint(src)
    dictionary = load_dictionary(loaded, dict_path)
    model = build_model(loaded)
    cfg = loaded.model_config
    origin = dict_path or (f"stored in {src}" if loaded.dictionary_symbols is not None else f"beside {src}")
    what = (f"read {loaded.source_format} checkpoint {src}: {cfg.layers} layers, d={cfg.embed_dim}, "
            f"{cfg.heads} heads, vocab {cfg.vocab_size}, {model.num_parameters():,} parameters; "
            f"dictionary of {len(dictionary)} symbols ({origin})")
    learned = learned_prompt_count(loaded.cfg)
    if learned and dictionary[len(dictionary) - 1] == f"learned{learned}":
        what += f", the last {learned} being the learned prompt tokens learned1..learned{learned}"
    if to == "native":
        cfg_out = loaded.cfg if loaded.source_format != "hf" else None
        save_native(dst, model, dictionary, cfg=cfg_out)
        return what + f"\nwrote native checkpoint {dst}"
    if to == "hf":
        bpecodes = Path(bpecodes) if bpecodes else find_bpecodes(src)
        if bpecodes is None:
            raise CheckpointError(f"HF export needs BPE codes for merges.txt: none found beside {src} "
                                  f"(looked for bpecodes, merges.txt); pass --bpecodes PATH")
        export_hf(model, dictionary, bpecodes, dst)
        return what + f"\nwrote HF directory {dst} (merges.txt from {bpecodes})"
    raise ValueError(f"--to must be native or hf, not {to!r}")


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
