"""fairseq ``MMapIndexedDataset`` (``--dataset-impl mmap``): byte-exact reader and builder (framework-notes §2.1).

``prefix.idx`` (little-endian):
    0   9      magic b"MMIDIDX\\x00\\x00"
    9   8      version <Q == 1
    17  1      dtype code <B (_CODE_TO_DTYPE)
    18  8      len <Q (number of items)
    26  4*len  sizes int32 (elements per item)
    ..  8*len  pointers int64 (byte offset of each item in .bin)
so a valid file is exactly 26 + 12*len bytes. ``prefix.bin`` is the items' ids back to back, nothing else.

Refused with a clear error: the legacy ``TNTIDX`` format, and Megatron-LM's variant (same magic and version but
an extra doc_count + doc_idx; told apart by the file length, since a fairseq reader would silently misread it).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from biogpt_train.utils import set_default_mode

PathLike = Union[str, os.PathLike]

MAGIC = b"MMIDIDX\x00\x00"
LEGACY_MAGIC = b"TNTIDX\x00\x00"
VERSION = 1
HEADER_SIZE = 26  # 9 magic + 8 version + 1 dtype code + 8 len

# fairseq 0.12 ``_code_to_dtype``; 7 (np.double) reads as float64, the writer emits 6 for float64.
_CODE_TO_DTYPE = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.double,
    8: np.uint16,
    9: np.uint32,
    10: np.uint64,
}


def dtype_code(dtype) -> int:
    """Header code of a numpy dtype (first match in code order, as fairseq)."""
    dtype = np.dtype(dtype)
    for code, dt in _CODE_TO_DTYPE.items():
        if np.dtype(dt) == dtype:
            return code
    raise ValueError(f"dtype {dtype} cannot be stored in an MMapIndexedDataset (codes: {_CODE_TO_DTYPE})")


def best_fitting_int_dtype(max_int_to_represent: Optional[int]):
    """fairseq 0.12: uint16 below 65,500, uint32 below 2**32-1, else int64 (None -> uint32, a safe guess).

    fairseq passes ``len(dictionary)``. (v0.10.2 gave int32 above uint16; 0.12 files use uint32, code 9.)
    """
    if max_int_to_represent is None:
        return np.uint32
    if max_int_to_represent < 65500:
        return np.uint16
    if max_int_to_represent < 4294967295:
        return np.uint32
    return np.int64  # fairseq avoids uint64: no space saved and odd type promotion


def index_file_path(prefix: PathLike) -> str:
    return os.fspath(prefix) + ".idx"


def data_file_path(prefix: PathLike) -> str:
    return os.fspath(prefix) + ".bin"


def dataset_exists(prefix: PathLike) -> bool:
    return os.path.exists(index_file_path(prefix)) and os.path.exists(data_file_path(prefix))


# ---- index --------------------------------------------------------------------------------------------------
def read_index(idx_path: PathLike):
    """Parse and validate a ``.idx`` file -> (dtype, sizes int32 array, pointers int64 array)."""
    idx_path = os.fspath(idx_path)
    try:
        with open(idx_path, "rb") as f:
            head = f.read(HEADER_SIZE + 8)
    except FileNotFoundError:
        raise FileNotFoundError(f"index file not found: {idx_path}") from None
    file_len = os.path.getsize(idx_path)
    if head[:8] == LEGACY_MAGIC:
        raise ValueError(
            f"{idx_path}: legacy fairseq IndexedDataset (TNTIDX, --dataset-impl lazy/cached) is not supported; "
            "re-binarise with --dataset-impl mmap"
        )
    if head[:9] != MAGIC:
        raise ValueError(f"{idx_path}: not an MMapIndexedDataset index (magic {head[:9]!r}, expected {MAGIC!r})")
    if len(head) < HEADER_SIZE:
        raise ValueError(f"{idx_path}: truncated header ({file_len} bytes, need {HEADER_SIZE})")
    (version,) = struct.unpack("<Q", head[9:17])
    if version != VERSION:
        raise ValueError(f"{idx_path}: unsupported index version {version} (expected {VERSION})")
    code = head[17]
    if code not in _CODE_TO_DTYPE:
        raise ValueError(f"{idx_path}: unknown dtype code {code} (known: {sorted(_CODE_TO_DTYPE)})")
    dtype = np.dtype(_CODE_TO_DTYPE[code])
    (n,) = struct.unpack("<Q", head[18:26])
    expected = HEADER_SIZE + 12 * n
    if file_len != expected:
        if len(head) >= HEADER_SIZE + 8:
            (doc_count,) = struct.unpack("<Q", head[26:34])
            if file_len == 34 + 12 * n + 8 * doc_count:
                raise ValueError(
                    f"{idx_path}: this is a Megatron-LM index (extra doc_idx of {doc_count} entries after "
                    f"{n} items), not fairseq's format; convert it or binarise with fairseq-preprocess"
                )
        raise ValueError(
            f"{idx_path}: index is {file_len} bytes but a fairseq index of {n} items is 26 + 12*{n} = {expected} "
            "bytes (truncated or not fairseq's format)"
        )
    if n == 0:
        return dtype, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    mm = np.memmap(idx_path, mode="r", order="C")
    sizes = np.frombuffer(mm, dtype="<i4", count=n, offset=HEADER_SIZE)
    pointers = np.frombuffer(mm, dtype="<i8", count=n, offset=HEADER_SIZE + 4 * n)
    return dtype, sizes, pointers


def _index_bytes(dtype, sizes: Sequence[int]) -> bytes:
    dtype = np.dtype(dtype)
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size and (sizes.min() < 0 or sizes.max() > np.iinfo(np.int32).max):
        raise ValueError("item sizes must fit in int32")
    # Pointers: exclusive prefix sum of byte lengths.
    pointers = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > 1:
        np.cumsum(sizes[:-1] * dtype.itemsize, out=pointers[1:])
    return b"".join(
        (
            MAGIC,
            struct.pack("<Q", VERSION),
            struct.pack("<B", dtype_code(dtype)),
            struct.pack("<Q", len(sizes)),
            sizes.astype("<i4").tobytes(order="C"),
            pointers.astype("<i8").tobytes(order="C"),
        )
    )


# ---- reader -------------------------------------------------------------------------------------------------
class MMapIndexedDataset:
    """Read-only view of ``prefix.{idx,bin}``; ``ds[i]`` is an int64 numpy array. Pickling keeps only the prefix."""

    def __init__(self, prefix: PathLike):
        self._open(os.fspath(prefix))

    def _open(self, prefix: str) -> None:
        self.prefix = prefix
        idx_path, bin_path = index_file_path(prefix), data_file_path(prefix)
        self.dtype, self._sizes, self._pointers = read_index(idx_path)
        if not os.path.exists(bin_path):
            raise FileNotFoundError(f"data file not found: {bin_path} (index {idx_path} exists)")
        bin_len = os.path.getsize(bin_path)
        itemsize = self.dtype.itemsize
        if len(self._sizes):
            if self._sizes.min() < 0:
                bad = int(np.argmin(self._sizes))
                raise ValueError(f"{idx_path}: item {bad} has negative size {int(self._sizes[bad])}")
            ends = self._pointers + self._sizes.astype(np.int64) * itemsize
            if self._pointers.min() < 0 or ends.max() > bin_len:
                bad = int(np.argmax((ends > bin_len) | (self._pointers < 0)))
                raise ValueError(
                    f"{bin_path}: item {bad} (bytes {int(self._pointers[bad])}..{int(ends[bad])}) lies outside the "
                    f"{bin_len}-byte data file; .bin and .idx do not belong together"
                )
            data_end = int(ends.max())
        else:
            data_end = 0
        if data_end != bin_len:
            raise ValueError(
                f"{bin_path}: {bin_len} bytes but {idx_path} describes {data_end} bytes of {self.dtype} data; "
                ".bin and .idx do not belong together (or one is truncated)"
            )
        # np.memmap refuses empty files; an empty dataset needs no mapping.
        self._bin = np.memmap(bin_path, mode="r", order="C") if bin_len else np.zeros(0, dtype=np.uint8)
        self._dtype_le = self.dtype.newbyteorder("<")

    def __getstate__(self):
        return {"prefix": self.prefix}

    def __setstate__(self, state):
        self._open(state["prefix"])

    def __len__(self) -> int:
        return len(self._sizes)

    def __getitem__(self, i) -> np.ndarray:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.prefix} ({len(self)} items)")
        arr = np.frombuffer(self._bin, dtype=self._dtype_le, count=int(self._sizes[i]), offset=int(self._pointers[i]))
        return arr.astype(np.int64)  # always a copy: callers may modify it, and int64 like fairseq

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def sizes(self) -> np.ndarray:
        return self._sizes

    def num_tokens(self, i: int) -> int:
        return int(self._sizes[i])

    def size(self, i: int) -> int:
        return int(self._sizes[i])

    @staticmethod
    def exists(prefix: PathLike) -> bool:
        return dataset_exists(prefix)


# ---- builder ------------------------------------------------------------------------------------------------
class MMapIndexedDatasetBuilder:
    """Append items, then ``finalize(idx_path)``.

    Data goes to a temporary file beside ``bin_path``; finalize removes any old ``.idx``, renames the data into
    place, then renames the new index into place. The index is the commit marker: a killed run leaves either
    no ``.idx`` (``dataset_exists`` is False) or a matching pair, never a complete-looking mismatched one.
    """

    def __init__(self, bin_path: PathLike, dtype=np.uint16):
        self.bin_path = Path(bin_path)
        self.dtype = np.dtype(dtype)
        dtype_code(self.dtype)  # fail early on an unsupported dtype
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.bin_path.name + ".", suffix=".tmp", dir=self.bin_path.parent)
        self._tmp_bin = Path(tmp)
        self._data_file = os.fdopen(fd, "wb")
        self._sizes: list = []
        self._finalized = False
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self._range = (int(info.min), int(info.max))
        else:
            self._range = None

    def add_item(self, ids) -> None:
        if hasattr(ids, "detach"):  # torch tensor
            ids = ids.detach().cpu().numpy()
        src = np.asarray(ids)
        if src.ndim != 1:
            raise ValueError(f"{self.bin_path}: item {len(self._sizes)} must be 1-D, got shape {src.shape}")
        if self._range is not None and src.size:
            lo, hi = int(src.min()), int(src.max())
            if lo < self._range[0] or hi > self._range[1]:
                raise ValueError(
                    f"{self.bin_path}: item {len(self._sizes)} has ids in [{lo}, {hi}], outside {self.dtype} "
                    f"range {self._range}; use best_fitting_int_dtype(len(dictionary))"
                )
        self._data_file.write(src.astype(self.dtype.newbyteorder("<"), copy=False).tobytes(order="C"))
        self._sizes.append(int(src.size))

    def merge_file_(self, prefix: PathLike) -> None:
        """Append another dataset (e.g. a worker's shard); its dtype must equal ours."""
        dtype, sizes, _ = read_index(index_file_path(prefix))
        if dtype != self.dtype:
            raise ValueError(
                f"cannot merge {index_file_path(prefix)} (dtype {dtype}) into {self.bin_path} (dtype {self.dtype})"
            )
        self._sizes.extend(int(s) for s in sizes)
        with open(data_file_path(prefix), "rb") as f:
            shutil.copyfileobj(f, self._data_file)

    def finalize(self, idx_path: PathLike) -> None:
        idx_path = Path(idx_path)
        index = _index_bytes(self.dtype, self._sizes)
        self._data_file.flush()
        os.fsync(self._data_file.fileno())
        self._data_file.close()
        fd, tmp_idx = tempfile.mkstemp(prefix=idx_path.name + ".", suffix=".tmp", dir=idx_path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(index)
                f.flush()
                os.fsync(f.fileno())
            for tmp in (self._tmp_bin, Path(tmp_idx)):
                set_default_mode(tmp)
            if idx_path.exists():
                idx_path.unlink()  # no stale index may pair with the new .bin
            os.replace(self._tmp_bin, self.bin_path)
            os.replace(tmp_idx, idx_path)
            self._finalized = True
        except BaseException:
            for tmp in (self._tmp_bin, Path(tmp_idx)):
                if tmp.exists():
                    tmp.unlink()
            raise

    def abort(self) -> None:
        """Discard everything written so far (leaves existing files untouched)."""
        if not self._data_file.closed:
            self._data_file.close()
        if self._tmp_bin.exists():
            self._tmp_bin.unlink()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self._finalized:  # an error, or a block that never called finalize: drop the partial data
            self.abort()
        return False


def make_builder(prefix: PathLike, vocab_size: Optional[int]) -> MMapIndexedDatasetBuilder:
    return MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=best_fitting_int_dtype(vocab_size))


def write_dataset(prefix: PathLike, items: Iterable, vocab_size: Optional[int]) -> None:
    """Write ``prefix.{bin,idx}`` from id lists, dtype chosen as fairseq-preprocess does; atomic."""
    with make_builder(prefix, vocab_size) as builder:
        for ids in items:
            builder.add_item(ids)
        builder.finalize(index_file_path(prefix))
