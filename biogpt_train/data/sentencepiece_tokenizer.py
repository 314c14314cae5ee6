"""SentencePiece tokenizer for Llama-family models, with ids equal to transformers' `LlamaTokenizer(Fast)`.

transformers (5.x) builds a Llama tokenizer from a `tokenizer.model` as: no normalizer (the model's
normalization rule and `remove_extra_whitespaces` are ignored), spaces become "▁", one "▁" is prepended only
to the text chunk at offset 0 and only when it does not already start with a space ("first" prepend scheme,
`legacy=False`), then byte-fallback BPE over the model's pieces. The special tokens (`<unk>`, `<s>`, `</s>`)
are matched in the raw text even with `add_special_tokens=False`, and the text after one gets no "▁".

We reproduce that with the sentencepiece library itself: the model proto is copied with an identity
normaliser and no dummy prefix, and `encode` adds the prefix space and splits off special tokens the same way.
For a Llama-style model (identity normalisation, whitespace kept, dummy prefix on) this equals plain
`sp.encode(text)` except for texts that start with a space or contain the special-token strings.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence, Union

import sentencepiece as spm

PathLike = Union[str, os.PathLike]
SPACE = "\u2581"  # "▁", SentencePiece's whitespace symbol


class SentencePieceModelError(ValueError):
    """A file that is not a readable SentencePiece model."""


def _load_proto(model_file: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    try:
        data = model_file.read_bytes()
    except OSError as e:
        raise SentencePieceModelError(f"cannot read SentencePiece model {model_file}: {e.strerror}") from None
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(data)
        spm.SentencePieceProcessor(model_proto=data)  # the library's own validation
    except Exception:  # protobuf DecodeError / sentencepiece RuntimeError
        proto = None
    if proto is None or not proto.pieces:
        raise SentencePieceModelError(f"{model_file} is not a SentencePiece model (expected a tokenizer.model "
                                      f"written by spm_train / SentencePieceTrainer)")
    return proto


class SentencePieceTokenizer:
    """`encode(text) -> ids` without special tokens, `decode(ids) -> text` (special tokens dropped)."""

    def __init__(self, model_file: PathLike):
        self.model_file = Path(model_file)
        proto = _load_proto(self.model_file)
        # HF's Llama tokenizer has no normaliser and adds the prefix space itself (see the module docstring)
        ns = proto.normalizer_spec
        ns.name, ns.precompiled_charsmap = "identity", b""
        ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = False, False, True
        proto.denormalizer_spec.precompiled_charsmap = b""
        self._proto_bytes = proto.SerializeToString()
        self._init_backend()

    def _init_backend(self):
        self.sp = spm.SentencePieceProcessor(model_proto=self._proto_bytes)
        sp = self.sp
        self.unk_id, self.bos_id, self.eos_id = sp.unk_id(), sp.bos_id(), sp.eos_id()
        # Llama has no pad piece; the Llama/BioMedGPT convention pads with id 0 (<unk>)
        self.pad_id = sp.pad_id() if sp.pad_id() >= 0 else self.unk_id
        specials = {i: sp.id_to_piece(i) for i in (self.unk_id, self.bos_id, self.eos_id) if i >= 0}
        self._special_ids = set(specials) | {i for i in range(len(self)) if sp.is_control(i)}
        self._special_by_text = {piece: i for i, piece in specials.items()}
        # longest first, so a special string that contains another wins (as in HF's added-token trie)
        pattern = "|".join(re.escape(p) for p in sorted(self._special_by_text, key=len, reverse=True))
        self._special_re = re.compile(f"({pattern})") if pattern else None

    def __getstate__(self):  # picklable for multiprocessing workers: the processor is rebuilt from bytes
        return {"model_file": self.model_file, "_proto_bytes": self._proto_bytes}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_backend()

    @property
    def prefix_token_id(self) -> int:
        """The token a sequence starts with (for LM scoring of a whole text): <s>."""
        return self.bos_id

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> List[int]:
        """Token ids of `text`, without <s>/</s> (HF `encode(text, add_special_tokens=False)`)."""
        chunks = self._special_re.split(text) if self._special_re else [text]
        ids: List[int] = []
        for i, chunk in enumerate(chunks):
            if i % 2:  # a special-token string matched in the text
                ids.append(self._special_by_text[chunk])
            elif chunk:
                if i == 0 and not chunk.startswith((" ", SPACE)):
                    chunk = " " + chunk  # the "▁" prefix only for the chunk at offset 0
                ids.extend(self.sp.encode(chunk))
        return ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` with special tokens (<unk>, <s>, </s>, control pieces) skipped; one leading space
        (the prefix "▁") is removed, as HF `decode(ids, skip_special_tokens=True)` does."""
        text = self.sp.decode([int(i) for i in ids if int(i) not in self._special_ids])
        return text[1:] if text.startswith(" ") else text

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


def train_sentencepiece(inputs: Union[PathLike, Sequence[PathLike], Iterable[str]], out_prefix: PathLike,
                        vocab_size: int, model_type: str = "bpe", *, character_coverage: float = 0.99995,
                        input_sentence_size: int = 0, seed_sentencepiece_size: int = 1_000_000,
                        num_threads: int = 1, **extra) -> Path:
    """Train a Llama-style SentencePiece model; writes `<out_prefix>.model` and `.vocab` atomically.

    `inputs`: a text file, a list/tuple of files (one sentence/document per line), or any other iterable of texts.
    Settings follow Llama's tokenizer.model: ids unk/bos/eos = 0/1/2 and no pad, byte fallback, digits split,
    identity normalisation with whitespace kept, a dummy prefix. `extra` goes to SentencePieceTrainer as is.
    """
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    options = dict(
        vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        max_sentence_length=1 << 16, input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True, seed_sentencepiece_size=seed_sentencepiece_size,
        num_threads=num_threads, minloglevel=2,
    )
    options.update(extra)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = None
    if isinstance(inputs, (list, tuple)):  # file names
        files = [Path(p) for p in inputs]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"SentencePiece training input {f} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_prefix.name}.", suffix=".tmp", dir=out_prefix.parent))
    try:
        tmp_prefix = tmp / out_prefix.name
        if files is not None:
            spm.SentencePieceTrainer.train(input=[str(f) for f in files], model_prefix=str(tmp_prefix), **options)
        else:
            # an iterator of texts; SentencePiece reads one sentence per line, so newlines become spaces
            sentences = (str(t).replace("\n", " ") for t in inputs)
            spm.SentencePieceTrainer.train(sentence_iterator=sentences, model_prefix=str(tmp_prefix), **options)
        for suffix in (".vocab", ".model"):  # .model last: its presence means the pair is complete
            os.replace(tmp_prefix.with_name(tmp_prefix.name + suffix), out_prefix.with_name(out_prefix.name + suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_prefix.with_name(out_prefix.name + ".model")
