"""BioGPT prompt dataset (reference §5.2): truncation with '...', assembly, shift, padding, sizes, inference prefix."""

import numpy as np
import pytest

from biogpt_train.data.batching import make_batches
from biogpt_train.data.prompt_dataset import (
    PromptDataset,
    build_inference_prefix,
    collate_prompt,
    max_target_length,
    prompt_ids,
    truncate_source,
    truncate_target,
)

EOS, PAD, ELL = 2, 1, 9  # '...' has id 9 in these hand-made examples


def test_max_target_length_re_and_hoc():
    assert max_target_length(1024, 640, 9) == 375  # RE tasks, learned prompt of 9
    assert max_target_length(1024, 900, 1) == 123  # HoC, learned prompt of 1
    assert max_target_length(1024, 640, 9, prefix=True) == 374


def test_source_truncation_at_640():
    long_src = list(range(100, 800)) + [EOS]  # 700 ids + </s>
    out = truncate_source(long_src, 640, ELL, EOS)
    assert len(out) == 641
    assert out[:639].tolist() == long_src[:639] and out[-2] == ELL and out[-1] == EOS
    exact = list(range(100, 740)) + [EOS]  # exactly 640 ids: untouched
    assert truncate_source(exact, 640, ELL, EOS).tolist() == exact
    one_over = list(range(100, 741)) + [EOS]
    assert truncate_source(one_over, 640, ELL, EOS).tolist() == list(range(100, 739)) + [ELL, EOS]


@pytest.mark.parametrize("max_src, prompt_len, limit", [(640, 9, 375), (900, 1, 123)])
def test_target_truncation_re_and_hoc(max_src, prompt_len, limit):
    tgt = list(range(1000, 1000 + limit + 20)) + [EOS]
    out = truncate_target(tgt, max_target_length(1024, max_src, prompt_len), ELL, EOS)
    assert len(out) == limit
    assert out[: limit - 2].tolist() == tgt[: limit - 2] and out[-2] == ELL and out[-1] == EOS
    fits = list(range(1000, 1000 + limit - 1)) + [EOS]  # exactly `limit` ids: untouched
    assert truncate_target(fits, limit, ELL, EOS).tolist() == fits


def make_ds(**kw):
    src = [[10, 11, 12, EOS], [13, EOS]]
    tgt = [[20, 21, EOS], [22, 23, 24, 25, EOS]]
    args = dict(prompt=[50, 51], ellipsis_id=ELL, max_source_positions=3, max_target_positions=10)
    args.update(kw)
    return PromptDataset(src, tgt, **args)


def test_assembly_shift_and_padding():
    ds = make_ds()
    assert ds.max_target_length == 10 - 3 - 2
    s0 = ds[0]
    assert s0["sentence"].tolist() == [10, 11, 12, 50, 51, 20, 21, EOS]
    batch = ds.collater([ds[0], ds[1]])
    assert batch["target"].tolist() == [
        [10, 11, 12, 50, 51, 20, 21, EOS],
        [13, 50, 51, 22, 23, 24, 25, EOS],
    ]
    # the final </s> moves to the front: input = [</s>, source, prompt, target[:-1]]
    assert batch["net_input"]["src_tokens"].tolist() == [
        [EOS, 10, 11, 12, 50, 51, 20, 21],
        [EOS, 13, 50, 51, 22, 23, 24, 25],
    ]
    assert batch["ntokens"] == 16 and batch["nsentences"] == 2


def test_right_padding_and_ntokens_counts_non_pad():
    ds = make_ds(max_target_positions=12)
    batch = ds.collater([ds[0], ds[1]])
    short = PromptDataset([[13, EOS]], [[22, EOS]], [50], ellipsis_id=ELL, max_source_positions=3,
                          max_target_positions=12)
    b = collate_prompt([ds[0], short[0]])
    assert b["target"].tolist()[1] == [13, 50, 22, EOS, PAD, PAD, PAD, PAD]
    assert b["net_input"]["src_tokens"].tolist()[1] == [EOS, 13, 50, 22, PAD, PAD, PAD, PAD]
    assert b["ntokens"] == 8 + 4
    assert batch["ntokens"] == 16
    assert collate_prompt([]) == {}


def test_truncation_inside_dataset_and_sizes():
    src = [list(range(100, 106)) + [EOS], [13, EOS]]  # 6 ids > max 3
    tgt = [list(range(200, 210)) + [EOS], [22, EOS]]  # 11 ids > max 5
    ds = PromptDataset(src, tgt, [50, 51], ellipsis_id=ELL, max_source_positions=3, max_target_positions=10)
    s = ds[0]
    assert s["source"].tolist() == [100, 101, ELL, EOS]
    assert s["target"].tolist() == [200, 201, 202, ELL, EOS]
    assert s["sentence"].tolist() == [100, 101, ELL, 50, 51, 200, 201, 202, ELL, EOS]
    # size = min(len_src - 1, max_src) + min(len_tgt, max_tgt); the prompt is not counted
    assert ds.sizes.tolist() == [3 + 5, 1 + 2]


def test_mask_source_loss_option():
    ds = make_ds(mask_source_loss=True)
    batch = ds.collater([ds[0]])
    assert batch["target"].tolist() == [[PAD, PAD, PAD, PAD, PAD, 20, 21, EOS]]
    assert batch["net_input"]["src_tokens"].tolist() == [[EOS, 10, 11, 12, 50, 51, 20, 21]]
    assert batch["ntokens"] == 3


def test_prefix_mode():
    ds = make_ds(prefix=True, sep_id=7)
    assert ds.max_target_length == 10 - 3 - 2 - 1
    s = ds[0]
    assert s["sentence"].tolist() == [50, 51, 10, 11, 12, 7, 20, 21, EOS]
    assert s["n_context"] == 6
    with pytest.raises(ValueError, match="sep_id"):
        make_ds(prefix=True)


def test_no_prompt():
    ds = make_ds(prompt=[])
    assert ds[0]["sentence"].tolist() == [10, 11, 12, 20, 21, EOS]


def test_inference_prefix():
    # source without or with its </s>; truncated like training; prompt appended; no leading </s>
    assert build_inference_prefix([10, 11, 12], [50, 51], max_source_positions=3, ellipsis_id=ELL) == [
        10, 11, 12, 50, 51]
    assert build_inference_prefix([10, 11, 12, 13, EOS], [50, 51], max_source_positions=3, ellipsis_id=ELL) == [
        10, 11, ELL, 50, 51]
    assert build_inference_prefix([10], [50], max_source_positions=3, ellipsis_id=ELL, prefix=True, sep_id=7) == [
        50, 10, 7]
    assert make_ds().inference_prefix(1) == [13, 50, 51]


def test_too_small_target_budget_raises():
    with pytest.raises(ValueError, match="leaves no room"):
        PromptDataset([[1, EOS]], [[1, EOS]], [50] * 9, ellipsis_id=ELL, max_source_positions=1015,
                      max_target_positions=1024)


class TinyDict:
    def __init__(self, words):
        self.ids = {w: 4 + k for k, w in enumerate(words)}

    def index(self, w):
        return self.ids.get(w, 3)

    def unk(self):
        return 3


def test_prompt_ids():
    d = TinyDict(["learned1", "learned2", "learned3", "the", "answer"])
    assert prompt_ids(d, learned_prompt=3) == [4, 5, 6]
    assert prompt_ids(d, manual_prompt="the answer") == [7, 8]
    assert prompt_ids(d) == []
    with pytest.raises(ValueError, match="not in the dictionary"):
        prompt_ids(d, learned_prompt=9)
    with pytest.raises(ValueError, match="mutually exclusive"):
        prompt_ids(d, manual_prompt="the", learned_prompt=1)


def test_ordered_indices_and_batching():
    src = [[10] * k + [EOS] for k in (5, 1, 3, 1, 2)]
    tgt = [[20, EOS]] * 5
    ds = PromptDataset(src, tgt, [50], ellipsis_id=ELL, max_source_positions=8, max_target_positions=20)
    np.random.seed(1)  # BioGPT: with numpy_seed(seed): perm, then stable sort by size
    perm = np.random.permutation(5)
    assert ds.ordered_indices(1).tolist() == perm[np.argsort(ds.sizes[perm], kind="mergesort")].tolist()
    batches = make_batches(ds, seed=1, max_tokens=8, required_batch_size_multiple=1)
    assert sorted(i for b in batches for i in b.tolist()) == [0, 1, 2, 3, 4]
    for b in batches:
        assert len(b) * ds.sizes[b].max() <= 8


def _dict(tmp_path, words=("the", "answer", "is", "...")):
    from biogpt_train.data.dictionary import Dictionary

    (tmp_path / "dict.txt").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(words)), encoding="utf-8")
    return Dictionary.load(tmp_path / "dict.txt")


def test_add_prompt_symbols_follows_biogpt_setup_prompt(tmp_path):
    """BioGPT's setup_prompt: <seqsep> is added before learned1..N (prefix mode); a manual prompt's unknown words
    become new symbols in order (fairseq's add_if_not_exist=True); known words keep their ids."""
    from biogpt_train.data.prompt_dataset import add_prompt_symbols

    d = _dict(tmp_path)
    base = len(d)
    assert add_prompt_symbols(d, learned_prompt=3, prefix=True) == [base + 1, base + 2, base + 3]
    assert d.symbols[base:] == ["<seqsep>", "learned1", "learned2", "learned3"]
    d = _dict(tmp_path)
    ids = add_prompt_symbols(d, manual_prompt="the zeta answer omega zeta")
    assert d.symbols[base:] == ["zeta", "omega"]
    assert ids == [d.index("the"), base, d.index("answer"), base + 1, base]
    d = _dict(tmp_path)
    with pytest.raises(ValueError, match="not in the dictionary"):
        add_prompt_symbols(d, manual_prompt="the zeta", add_unknown_words=False)
    assert len(d) == base


def test_build_dictionary_grows_for_manual_prompts_and_puts_sep_first(tmp_path):
    from omegaconf import OmegaConf

    from biogpt_train.data.splits import build_dictionary

    base = len(_dict(tmp_path))
    task = dict(data=str(tmp_path), learned_prompt=0, learned_prompt_pattern="learned", manual_prompt="is zeta",
                prefix=False, sep_token="<seqsep>", add_unknown_prompt_words=True)
    assert build_dictionary(OmegaConf.create({"task": task})).symbols[base:] == ["zeta"]
    task.update(manual_prompt=None, learned_prompt=2, prefix=True)
    assert build_dictionary(OmegaConf.create({"task": task})).symbols[base:] == ["<seqsep>", "learned1", "learned2"]
