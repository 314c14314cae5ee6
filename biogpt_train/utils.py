"""Small helpers shared by every module: atomic writes, checksums, seeding.

Atomic writes: data goes to a temporary file in the *same directory* (so os.replace is a rename on one
filesystem, which POSIX makes atomic), is flushed and fsync'd, then renamed over the destination. A run
killed half-way leaves at most a stray ``*.tmp*`` file, never a truncated file under the real name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is racy once threads exist.
_UMASK = _read_umask()


def set_default_mode(path: PathLike) -> None:
    """Give a mkstemp file (0600) the permissions a plain ``open(path, "w")`` would have had."""
    os.chmod(path, 0o666 & ~_UMASK)


def _tmp_name(path: Path) -> Path:
    # Unique per process and call, so two writers of the same file never share a tmp file.
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform/filesystem, so best effort.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.

        with atomic_path("out/train.idx") as tmp:
            write_somehow(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if fsync and tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        set_default_mode(tmp)
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: PathLike, data: Union[bytes, str], encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or str encoded with ``encoding``, no newline translation) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode(encoding)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write({path}): data must be bytes or str, got {type(data).__name__}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (for manifests and provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: Union[bytes, str]) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (if importable) the same way on every call."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


@contextlib.contextmanager
def numpy_seed(seed, *addl_seeds) -> Iterator[None]:
    """Temporarily seed numpy's global RNG, restoring its state afterwards (fairseq ``data_utils.numpy_seed``).

    ``seed=None`` is a no-op; extra seeds are mixed in exactly as fairseq does (``hash`` of an int tuple is
    deterministic across processes, unlike str hashes), so shuffles match fairseq's for the same seeds.
    """
    import numpy as np

    if seed is None:
        yield
        return
    if addl_seeds:
        seed = int(hash((seed, *addl_seeds)) % 1e6)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def file_entry(path: PathLike) -> dict:
    """What results files record of an input: resolved path, size and sha256 (an HF directory: each file's)."""
    path = Path(path)
    if path.is_dir():
        return {"path": str(path.resolve()),
                "sha256": {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}}
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def json_safe(x):
    """Plain JSON values: NaN/inf -> None (JSON has none), numpy scalars -> Python, dict keys -> str."""
    import math

    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy / torch scalars
        return json_safe(x.item())
    return x
