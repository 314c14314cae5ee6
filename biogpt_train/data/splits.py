"""Datasets and batch iterators of a configured task: the prepared directory's dictionary (+ prompt symbols),
its splits as LM blocks or prompt pairs, and fairseq's batching into an epoch iterator. Used by the trainer and by
the decode/evaluation stages, so both see the same dictionary and the same examples."""

from __future__ import annotations

from pathlib import Path

from biogpt_train.data.batching import make_batches
from biogpt_train.data.dictionary import Dictionary
from biogpt_train.data.encoder_data import is_encoder_task, load_encoder_split, vocab_path
from biogpt_train.data.vocab import WordPieceVocab
from biogpt_train.data.indexed_dataset import MMapIndexedDataset, dataset_exists
from biogpt_train.data.iterators import EpochBatchIterator
from biogpt_train.data.lm_dataset import LMDataset
from biogpt_train.data.prompt_dataset import PromptDataset, add_prompt_symbols, prompt_ids
from biogpt_train.data.token_block import TokenBlockDataset
from biogpt_train.data.vocab import TOKENIZER_FILE, TokenizerVocab, is_tokenizer_dir, sequence_start


def data_dirs(cfg) -> list[Path]:
    return [Path(p) for p in str(cfg.task.data).split(":") if p]


def build_dictionary(cfg) -> Dictionary | TokenizerVocab:
    """The prepared data's vocabulary: dict.txt (BioGPT), tokenizer.model (SentencePiece, as a `TokenizerVocab`)
    or, for encoder tasks, vocab.txt (`WordPieceVocab`, data/encoder_data.py). A dict.txt is grown as BioGPT's task
    does (``add_prompt_symbols``): <seqsep> with prefix, then learned1..N or the manual prompt's unknown words (a
    SentencePiece vocabulary encodes a manual prompt as text instead)."""
    if is_encoder_task(cfg):
        return WordPieceVocab(vocab_path(cfg))
    root = data_dirs(cfg)[0]
    path = root / "dict.txt"
    if is_tokenizer_dir(root):
        d = TokenizerVocab.load(root / TOKENIZER_FILE)
    elif path.exists():
        d = Dictionary.load(path)
    else:
        raise FileNotFoundError(f"{path} (or {TOKENIZER_FILE}) not found: prepare the data first (pipeline stage "
                                "`prepare`, or `python -m data_prep ...`), or point task.data at a prepared directory")
    t = cfg.task
    add_prompt_symbols(d, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern, t.prefix, t.sep_token,
                       add_unknown_words=t.add_unknown_prompt_words and isinstance(d, Dictionary))
    return d


def load_split(cfg, d: Dictionary, split: str, epoch: int = 1):
    """The dataset of `split`; LM shards rotate per epoch as fairseq's "a:b:c" data paths."""
    if is_encoder_task(cfg):
        return load_encoder_split(cfg, d, split, epoch)
    dirs = data_dirs(cfg)
    root = dirs[(epoch - 1) % len(dirs)] if split == cfg.task.train_subset else dirs[0]
    if str(cfg.task.name) == "language_modeling":
        prefix = root / split
        if not dataset_exists(prefix):
            raise FileNotFoundError(f"{prefix}.idx/.bin not found (language_modeling task, split {split!r})")
        blocks = TokenBlockDataset(MMapIndexedDataset(prefix), cfg.task.tokens_per_sample,
                                   str(cfg.task.sample_break_mode), include_targets=True, eos=d.eos(), pad=d.pad())
        return LMDataset(blocks, pad=d.pad(), shuffle=split == cfg.task.train_subset)
    t = cfg.task
    pair = f"{split}.{t.source_lang}-{t.target_lang}"
    src, tgt = root / f"{pair}.{t.source_lang}", root / f"{pair}.{t.target_lang}"
    for prefix in (src, tgt):
        if not dataset_exists(prefix):
            raise FileNotFoundError(f"{prefix}.idx/.bin not found ({t.name} task, split {split!r})")
    return PromptDataset(
        MMapIndexedDataset(src), MMapIndexedDataset(tgt),
        prompt_ids(d, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern),
        ellipsis_id=d.index("..."), max_source_positions=t.max_source_positions,
        max_target_positions=t.max_target_positions, prefix=t.prefix,
        sep_id=d.index(t.sep_token) if t.prefix else None, mask_source_loss=t.mask_source_loss,
        shuffle=split == t.train_subset, eos=d.eos(), pad=d.pad(), bos=sequence_start(d),
    )


def max_positions(cfg, d: Dictionary, model_max: int) -> int:
    """fairseq's resolve_max_positions: longer items are dropped from train (and are an error in valid unless
    skip_invalid_size_inputs_valid_test). LM: the block size; prompt tasks: room left beside the prompt."""
    t = cfg.task
    if is_encoder_task(cfg):  # QA windows are cut to max_seq_length, blocks at data_prep
        return model_max
    if str(t.name) == "language_modeling":
        return min(t.tokens_per_sample, model_max)
    prompt = prompt_ids(d, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern)
    return min(t.max_target_positions, model_max) - len(prompt) - (1 if t.prefix else 0)


def make_iterator(cfg, dataset, split: str, info, epoch: int = 1, max_positions: int | None = None):
    train = split == cfg.task.train_subset
    dc = cfg.data
    max_tokens = dc.max_tokens if train or dc.max_tokens_valid is None else dc.max_tokens_valid
    batch_size = dc.batch_size if train or dc.batch_size_valid is None else dc.batch_size_valid
    if train and max_tokens and max_positions is not None:
        # fairseq resolve_max_positions(task, model, max_tokens) for training: a longer item is dropped (warned)
        max_positions = min(max_positions, max_tokens)
    seed = cfg.seed + (epoch if dc.update_ordered_indices_seed else 0)
    batches = make_batches(dataset, seed=seed, max_tokens=max_tokens, max_sentences=batch_size,
                           required_batch_size_multiple=dc.required_batch_size_multiple,
                           max_positions=max_positions, split="train" if train else split,
                           skip_invalid=dc.skip_invalid_size_inputs_valid_test)
    return EpochBatchIterator(batches, dataset=dataset, seed=cfg.seed, num_shards=info.world_size,
                              shard_id=info.rank, epoch=epoch, disable_shuffling=not train)


TOKENIZER_FILES = ("bpecodes", "tokenizer.model", "vocab.txt")


def tokenizer_files(cfg) -> dict:
    """The tokenizer files of the prepared data (BPE codes, SentencePiece model, WordPiece vocab), as bytes, so a
    checkpoint carries what it needs to encode text (dict.txt goes in as the checkpoint's dictionary)."""
    root = data_dirs(cfg)[0]
    return {name: (root / name).read_bytes() for name in TOKENIZER_FILES if (root / name).is_file()}
