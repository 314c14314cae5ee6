"""MMapIndexedDataset reader/builder against hand-built golden files (framework-notes §2.1).

The golden files in tests/golden/ were written with printf from the documented byte layout, not by our
writer; the same bytes are spelled out below so a failure shows which field differs.
"""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from biogpt_train.data.indexed_dataset import (
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    best_fitting_int_dtype,
    dataset_exists,
    dtype_code,
    read_index,
    write_dataset,
)

GOLDEN = Path(__file__).parent / "golden"

Q = lambda v: v.to_bytes(8, "little")  # noqa: E731  <Q
I = lambda v: v.to_bytes(4, "little")  # noqa: E731  int32

# lm_uint16: items [5,6,2], [2] (an empty input line), [300,7,8,2]; dtype code 8 (uint16).
LM_ITEMS = [[5, 6, 2], [2], [300, 7, 8, 2]]
LM_IDX = (
    b"MMIDIDX\x00\x00" + Q(1) + b"\x08" + Q(3)
    + I(3) + I(1) + I(4)  # sizes (elements)
    + Q(0) + Q(6) + Q(8)  # pointers (bytes): 0, 3*2, 4*2
)
LM_BIN = bytes.fromhex("0500 0600 0200" "0200" "2c01 0700 0800 0200".replace(" ", ""))
# big_uint32: items [70000, 4, 2], [2]; code 9 (uint32, fairseq 0.12).
BIG_ITEMS = [[70000, 4, 2], [2]]
BIG_IDX = b"MMIDIDX\x00\x00" + Q(1) + b"\x09" + Q(2) + I(3) + I(1) + Q(0) + Q(12)
BIG_BIN = bytes.fromhex("70110100" "04000000" "02000000" "02000000")
EMPTY_IDX = b"MMIDIDX\x00\x00" + Q(1) + b"\x08" + Q(0)


def test_golden_files_are_the_documented_bytes():
    # Guards the fixtures themselves: 26 + 12*len bytes, as documented.
    assert (GOLDEN / "lm_uint16.idx").read_bytes() == LM_IDX and len(LM_IDX) == 26 + 12 * 3
    assert (GOLDEN / "lm_uint16.bin").read_bytes() == LM_BIN
    assert (GOLDEN / "big_uint32.idx").read_bytes() == BIG_IDX
    assert (GOLDEN / "big_uint32.bin").read_bytes() == BIG_BIN
    assert (GOLDEN / "empty.idx").read_bytes() == EMPTY_IDX
    assert (GOLDEN / "empty.bin").read_bytes() == b""


@pytest.mark.parametrize(
    "name,items,dtype",
    [("lm_uint16", LM_ITEMS, np.uint16), ("big_uint32", BIG_ITEMS, np.uint32), ("empty", [], np.uint16)],
)
def test_reader_reads_golden(name, items, dtype):
    ds = MMapIndexedDataset(GOLDEN / name)
    assert len(ds) == len(items)
    assert ds.dtype == np.dtype(dtype)
    assert ds.sizes.dtype == np.int32
    assert ds.sizes.tolist() == [len(x) for x in items]
    for i, expected in enumerate(items):
        got = ds[i]
        assert got.dtype == np.int64
        assert got.tolist() == expected
    assert [x.tolist() for x in ds] == items
    assert dataset_exists(GOLDEN / name)


@pytest.mark.parametrize(
    "name,items,dtype",
    [("lm_uint16", LM_ITEMS, np.uint16), ("big_uint32", BIG_ITEMS, np.uint32), ("empty", [], np.uint16)],
)
def test_writer_reproduces_golden_bytes(tmp_path, name, items, dtype):
    prefix = tmp_path / name
    b = MMapIndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for item in items:
        b.add_item(np.array(item))
    b.finalize(str(prefix) + ".idx")
    assert (tmp_path / f"{name}.idx").read_bytes() == (GOLDEN / f"{name}.idx").read_bytes()
    assert (tmp_path / f"{name}.bin").read_bytes() == (GOLDEN / f"{name}.bin").read_bytes()
    assert sorted(os.listdir(tmp_path)) == sorted([f"{name}.bin", f"{name}.idx"])  # no tmp files left


def test_write_dataset_picks_dtype_like_fairseq(tmp_path):
    write_dataset(tmp_path / "a", LM_ITEMS, vocab_size=42384)  # BioGPT vocab -> uint16
    assert (tmp_path / "a.idx").read_bytes() == LM_IDX
    assert (tmp_path / "a.bin").read_bytes() == LM_BIN
    write_dataset(tmp_path / "b", BIG_ITEMS, vocab_size=70001)
    assert (tmp_path / "b.idx").read_bytes() == BIG_IDX


def test_best_fitting_int_dtype_fairseq_012():
    assert best_fitting_int_dtype(42384) == np.uint16
    assert best_fitting_int_dtype(57717) == np.uint16
    assert best_fitting_int_dtype(65499) == np.uint16
    assert best_fitting_int_dtype(65500) == np.uint32
    assert best_fitting_int_dtype(4294967294) == np.uint32
    assert best_fitting_int_dtype(4294967295) == np.int64
    assert best_fitting_int_dtype(None) == np.uint32


def test_dtype_codes():
    expected = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.uint16: 8,
                np.uint32: 9, np.uint64: 10}
    for dt, code in expected.items():
        assert dtype_code(dt) == code
    with pytest.raises(ValueError, match="cannot be stored"):
        dtype_code(np.float16)


def test_reads_code_7_as_float64(tmp_path):
    # code 7 (np.double) exists only in the reader table; values cast to int64 like fairseq.
    (tmp_path / "d.idx").write_bytes(b"MMIDIDX\x00\x00" + Q(1) + b"\x07" + Q(1) + I(2) + Q(0))
    (tmp_path / "d.bin").write_bytes(np.array([4.0, 2.0], dtype="<f8").tobytes())
    ds = MMapIndexedDataset(tmp_path / "d")
    assert ds.dtype == np.float64 and ds[0].tolist() == [4, 2] and ds[0].dtype == np.int64


def test_merge_file_(tmp_path):
    write_dataset(tmp_path / "s0", LM_ITEMS[:2], vocab_size=100)
    write_dataset(tmp_path / "s1", LM_ITEMS[2:], vocab_size=100)
    b = MMapIndexedDatasetBuilder(tmp_path / "m.bin", dtype=np.uint16)
    b.merge_file_(tmp_path / "s0")
    b.merge_file_(tmp_path / "s1")
    b.finalize(tmp_path / "m.idx")
    assert (tmp_path / "m.idx").read_bytes() == LM_IDX
    assert (tmp_path / "m.bin").read_bytes() == LM_BIN
    # dtype must match
    b2 = MMapIndexedDatasetBuilder(tmp_path / "x.bin", dtype=np.uint32)
    with pytest.raises(ValueError, match="dtype uint16.*dtype uint32"):
        b2.merge_file_(tmp_path / "s0")
    b2.abort()


def test_pickle_reopens(tmp_path):
    ds = MMapIndexedDataset(GOLDEN / "lm_uint16")
    blob = pickle.dumps(ds)
    assert len(blob) < 500  # only the path, not the data
    ds2 = pickle.loads(blob)
    assert [x.tolist() for x in ds2] == LM_ITEMS


def test_getitem_bounds_and_copy():
    ds = MMapIndexedDataset(GOLDEN / "lm_uint16")
    assert ds[-1].tolist() == LM_ITEMS[-1]
    with pytest.raises(IndexError):
        ds[3]
    a = ds[0]
    a[0] = 99  # returned arrays are writable copies
    assert ds[0].tolist() == LM_ITEMS[0]


def test_refuses_tntidx(tmp_path):
    # Legacy IndexedDataset header: TNTIDX magic, version, (code, elem size), (len, s)
    hdr = b"TNTIDX\x00\x00" + Q(1) + Q(4) + Q(4) + Q(1) + Q(1) + Q(0) * 2 + Q(0) + Q(3) + Q(3)
    (tmp_path / "t.idx").write_bytes(hdr)
    (tmp_path / "t.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"t\.idx: legacy fairseq IndexedDataset \(TNTIDX"):
        MMapIndexedDataset(tmp_path / "t")


def test_refuses_megatron(tmp_path):
    # Megatron: same magic/version, then <Q doc_count after len, and int64 doc_idx after pointers.
    idx = b"MMIDIDX\x00\x00" + Q(1) + b"\x08" + Q(3) + Q(2) + I(3) + I(1) + I(4) + Q(0) + Q(6) + Q(8) + Q(0) + Q(2)
    assert len(idx) == 34 + 12 * 3 + 8 * 2
    (tmp_path / "m.idx").write_bytes(idx)
    (tmp_path / "m.bin").write_bytes(LM_BIN)
    with pytest.raises(ValueError, match=r"m\.idx: this is a Megatron-LM index"):
        MMapIndexedDataset(tmp_path / "m")


@pytest.mark.parametrize("cut", [1, 12, 30])
def test_refuses_truncated_idx(tmp_path, cut):
    (tmp_path / "t.idx").write_bytes(LM_IDX[:-cut])
    (tmp_path / "t.bin").write_bytes(LM_BIN)
    with pytest.raises(ValueError, match=r"t\.idx: index is \d+ bytes but a fairseq index of 3 items"):
        MMapIndexedDataset(tmp_path / "t")


def test_refuses_bad_header(tmp_path):
    (tmp_path / "a.idx").write_bytes(b"NOTANIDX\x00" + LM_IDX[9:])
    (tmp_path / "a.bin").write_bytes(LM_BIN)
    with pytest.raises(ValueError, match="not an MMapIndexedDataset index"):
        MMapIndexedDataset(tmp_path / "a")
    (tmp_path / "a.idx").write_bytes(LM_IDX[:9] + Q(2) + LM_IDX[17:])
    with pytest.raises(ValueError, match="unsupported index version 2"):
        MMapIndexedDataset(tmp_path / "a")
    (tmp_path / "a.idx").write_bytes(LM_IDX[:17] + b"\x0b" + LM_IDX[18:])
    with pytest.raises(ValueError, match="unknown dtype code 11"):
        MMapIndexedDataset(tmp_path / "a")


def test_refuses_mismatched_bin(tmp_path):
    (tmp_path / "a.idx").write_bytes(LM_IDX)
    (tmp_path / "a.bin").write_bytes(LM_BIN[:-2])
    with pytest.raises(ValueError, match=r"a\.bin.*do not belong together"):
        MMapIndexedDataset(tmp_path / "a")
    (tmp_path / "a.bin").write_bytes(LM_BIN + b"\x00\x00")
    with pytest.raises(ValueError, match=r"a\.bin.*do not belong together"):
        MMapIndexedDataset(tmp_path / "a")
    os.unlink(tmp_path / "a.bin")
    with pytest.raises(FileNotFoundError, match=r"a\.bin"):
        MMapIndexedDataset(tmp_path / "a")


def test_add_item_range_checked(tmp_path):
    b = MMapIndexedDatasetBuilder(tmp_path / "r.bin", dtype=np.uint16)
    b.add_item([1, 2])
    with pytest.raises(ValueError, match=r"item 1 has ids in \[0, 70000\], outside uint16"):
        b.add_item([0, 70000])
    with pytest.raises(ValueError, match="must be 1-D"):
        b.add_item([[1, 2]])
    b.abort()
    assert os.listdir(tmp_path) == []


def test_add_item_accepts_torch(tmp_path):
    torch = pytest.importorskip("torch")
    b = MMapIndexedDatasetBuilder(tmp_path / "t.bin", dtype=np.uint16)
    for item in LM_ITEMS:
        b.add_item(torch.tensor(item, dtype=torch.int32))
    b.finalize(tmp_path / "t.idx")
    assert (tmp_path / "t.bin").read_bytes() == LM_BIN


def test_killed_build_leaves_no_pair(tmp_path):
    # An old complete dataset exists; a new build that dies before finalize must leave it untouched, and
    # one that dies mid-finalize must not leave a new .bin beside the old .idx.
    write_dataset(tmp_path / "d", LM_ITEMS, vocab_size=100)
    b = MMapIndexedDatasetBuilder(tmp_path / "d.bin", dtype=np.uint16)
    b.add_item([9, 9, 9, 2])
    # "killed": never finalized; the real files are unchanged and still read.
    assert [x.tolist() for x in MMapIndexedDataset(tmp_path / "d")] == LM_ITEMS
    b.abort()
    assert sorted(os.listdir(tmp_path)) == ["d.bin", "d.idx"]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with MMapIndexedDatasetBuilder(tmp_path / "e.bin", dtype=np.uint16) as b:
            b.add_item([1, 2])
            raise Boom
    assert sorted(os.listdir(tmp_path)) == ["d.bin", "d.idx"]
    with MMapIndexedDatasetBuilder(tmp_path / "f.bin", dtype=np.uint16) as b:
        b.add_item([1, 2])  # block left without finalize: nothing is kept
    assert sorted(os.listdir(tmp_path)) == ["d.bin", "d.idx"]
    with MMapIndexedDatasetBuilder(tmp_path / "g.bin", dtype=np.uint16) as b:
        b.add_item([1, 2])
        b.finalize(tmp_path / "g.idx")
    assert MMapIndexedDataset(tmp_path / "g")[0].tolist() == [1, 2]


def test_finalize_replaces_index_last(tmp_path, monkeypatch):
    # Simulate a crash between the two renames: the .bin is new, the .idx must be gone (not the old one).
    import biogpt_train.data.indexed_dataset as m

    write_dataset(tmp_path / "d", LM_ITEMS, vocab_size=100)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).suffix == ".idx":
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(m.os, "replace", replace)
    b = MMapIndexedDatasetBuilder(tmp_path / "d.bin", dtype=np.uint16)
    b.add_item([7, 2])
    with pytest.raises(KeyboardInterrupt):
        b.finalize(tmp_path / "d.idx")
    assert calls == ["d.bin", "d.idx"]
    assert not dataset_exists(tmp_path / "d")
    assert sorted(os.listdir(tmp_path)) == ["d.bin"]


def test_read_index_returns_views():
    dtype, sizes, pointers = read_index(GOLDEN / "lm_uint16.idx")
    assert dtype == np.uint16 and sizes.tolist() == [3, 1, 4] and pointers.tolist() == [0, 6, 8]


def test_index_struct_layout_matches_struct_module(tmp_path):
    # Cross-check our writer against an independent struct.pack encoding for a random dataset.
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 42384, size=int(n)).tolist() + [2] for n in rng.integers(0, 50, size=20)]
    write_dataset(tmp_path / "r", items, vocab_size=42384)
    sizes = [len(x) for x in items]
    pointers = np.concatenate([[0], np.cumsum(sizes)[:-1] * 2]).tolist()
    expected = (
        b"MMIDIDX\x00\x00" + struct.pack("<QBQ", 1, 8, len(items))
        + struct.pack(f"<{len(items)}i", *sizes) + struct.pack(f"<{len(items)}q", *pointers)
    )
    assert (tmp_path / "r.idx").read_bytes() == expected
    assert (tmp_path / "r.bin").read_bytes() == struct.pack(f"<{sum(sizes)}H", *[t for x in items for t in x])
    assert [x.tolist() for x in MMapIndexedDataset(tmp_path / "r")] == items
