"""`python -m data_prep.download NAME [--dest DIR] [--base-url URL] [...]`: fetch raw data with resume + checksums.

NAME (see `--list`):
  pubmed_baseline         NLM's annual baseline, pubmedYYnNNNN.xml.gz + .md5 (file list read from the index page)
  pubmedqa                ori_pqal.json, test_ground_truth.json (pubmedqa/pubmedqa, pinned commit)
  biogpt_tasks            BioGPT's raw task files (data/{BC5CDR,DDI,KD-DTI,HoC}/raw/..., pinned commit)
  biogpt_tokenizer        BioGPT's dict.txt + bpecodes
  biogpt_large_tokenizer  BioGPT-Large's dict.txt + bpecodes

Every file goes to `<dest>/<name>.part` first. An interrupted transfer is resumed with an HTTP Range request (a server
that ignores Range restarts it from zero), retried `--retries` times; the finished file is checked (PubMed: the .md5
published next to it; others: the sha256 recorded below when we have it, else the expected size) and only then renamed
to its final name. A mismatch deletes the .part and fails naming the file: no partial or corrupt file ever sits under
the final name. Files already present and verified are skipped, so rerunning the command resumes the whole set.

The URLs are defaults: `--base-url` points a NAME at a mirror (the relative file names stay the same).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("data_prep.download")

BIOGPT_COMMIT = "648f7d6503c038b44e70b7510bf431c7be94e891"  # reference commit (biogpt-reference.md)
PUBMEDQA_COMMIT = "1cbae8e92f72f20c8d3747cbb3bf5bc53554d997"
BIOGPT_RAW = f"https://raw.githubusercontent.com/microsoft/BioGPT/{BIOGPT_COMMIT}/data/"
USER_AGENT = "biogpt-train-data-prep/0.1 (+python urllib)"
CHUNK = 1 << 20


class DownloadError(Exception):
    """A file could not be fetched (after retries); names the URL and the destination."""


class ChecksumError(DownloadError):
    """The fetched bytes do not match the published/recorded checksum or size."""


@dataclass(frozen=True)
class FileSpec:
    name: str                      # path relative to the source's base URL and to --dest
    sha256: Optional[str] = None   # recorded from the reference copies (../shared/data), when we have them
    size: Optional[int] = None     # bytes, from biogpt-reference.md §9, when no sha256 is known


@dataclass(frozen=True)
class Source:
    base_url: str
    files: tuple = ()
    dest: str = "data/raw"
    listing: Optional[str] = None  # regex of file names to take from the base URL's index page (with .md5 files)
    about: str = ""


SOURCES: dict[str, Source] = {
    "pubmed_baseline": Source(
        "https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/", dest="data/raw/pubmed_baseline",
        listing=r"pubmed\d\dn\d{4}\.xml\.gz",
        about="NLM's current annual baseline (~1,200 files, ~30 GB); BioGPT used the items updated before 2021"),
    "pubmedqa": Source(
        f"https://raw.githubusercontent.com/pubmedqa/pubmedqa/{PUBMEDQA_COMMIT}/data/", dest="data/raw/PubMedQA",
        files=(FileSpec("ori_pqal.json"), FileSpec("test_ground_truth.json")),
        about="PubMedQA PQA-L (1000 labelled questions) and the official test labels"),
    "biogpt_tasks": Source(
        BIOGPT_RAW, dest="data/raw",
        files=(
            FileSpec("BC5CDR/raw/train.json", "f0bf995e30faed6f4016e9868345bb9759b29c57622871c383dc9755edc9fa1c"),
            FileSpec("BC5CDR/raw/valid.json", "cf299b8a72780d5f5e450d65c0f2c977da20a7458b5d71a795466a35172f515d"),
            FileSpec("BC5CDR/raw/test.json", size=1044897),
            FileSpec("BC5CDR/raw/train.entities.json",
                     "3526cc3286a425313faf6f04c1eb4dfbfe5b53a412cc72786f217c72981ea02b"),
            FileSpec("BC5CDR/raw/valid.entities.json",
                     "79f744756471406822fa576acfce628b093f4a6b6f6f3c2951d5d87db49662fd"),
            FileSpec("BC5CDR/raw/test.entities.json", size=88229),
            FileSpec("DDI/raw/train.json", "6382659ce86fa7da174d8ce7ac8ff90e8f58851cc9e6316894dbee8dde895af3"),
            FileSpec("DDI/raw/valid.json", "c5ec007d1625bb5b573c111694d65c2c32c4fbe989ebcad0e4562c71e545ec57"),
            FileSpec("DDI/raw/test.json", size=387832),
            FileSpec("KD-DTI/raw/train.json"),
            FileSpec("KD-DTI/raw/valid.json", "fa3ad78fb3b6faecb040489606cfcd234c8da31b46852e48f564d1e0810be56c"),
            FileSpec("KD-DTI/raw/test.json", size=2418450),
            FileSpec("HoC/raw/train.tsv", "2ef3f0c0245aa360917906a7483d7a46579bf70ca0c032030542d5acc9ed39ea"),
            FileSpec("HoC/raw/test.tsv", size=880801),
        ),
        about="BioGPT's raw fine-tuning data (BC5CDR, DDI, KD-DTI, HoC; HoC valid.tsv = test.tsv is skipped)"),
    "biogpt_tokenizer": Source(
        BIOGPT_RAW + "BioGPT/", dest="assets/BioGPT",
        files=(FileSpec("dict.txt", "1719be3b72a5af941702d1b393c1a551e839cca233d7e2c2d16485dc3ce46e8a"),
               FileSpec("bpecodes", "9dcbaa97d51e28e26cd82bc4b038affcb29fecf259f5bacf3f3775012d6cf174")),
        about="BioGPT dict.txt (42,384 ids with specials) + bpecodes (40k merges)"),
    "biogpt_large_tokenizer": Source(
        BIOGPT_RAW + "BioGPT-Large/", dest="assets/BioGPT-Large",
        files=(FileSpec("dict.txt", "42aeae466f4b991c342daa47d5e1a9dfce27d4ad366442a93364f65314344b92"),
               FileSpec("bpecodes", "fa6590c1e18131f84ad33159d0e3a7995416592bebebddae93942639c9b8863c")),
        about="BioGPT-Large dict.txt (57,717 ids) + bpecodes (50k merges)"),
}


# --- HTTP -----------------------------------------------------------------------------------------------------------

_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError)


def _open(url: str, start: int = 0, timeout: float = 60.0):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def fetch_bytes(url: str, timeout: float = 60.0, retries: int = 3) -> bytes:
    """Small files (index pages, .md5) in memory, with retries."""
    for attempt in range(retries + 1):
        try:
            with _open(url, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == retries:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
        except _TRANSIENT as err:
            if attempt == retries:
                raise DownloadError(f"{url}: {err}") from None
        time.sleep(min(2 ** attempt, 30))
    raise AssertionError("unreachable")


def _fetch_to_part(url: str, part: Path, timeout: float, progress) -> None:
    """One attempt: append to `part` from its current size (Range), or rewrite it if the server ignores Range."""
    have = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the .part is already whole; the checksum decides
            return
        raise
    with resp:
        if have and resp.status != 206:
            have = 0  # server ignored Range: start again
        length = resp.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with open(part, "ab" if have else "wb") as f:
            while True:
                block = resp.read(CHUNK)
                if not block:
                    break
                f.write(block)
                got += len(block)
                if progress is not None:
                    progress(len(block))
        if expected is not None and got < expected:
            raise http.client.IncompleteRead(b"", expected - got)


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, *, sha256: Optional[str] = None, md5: Optional[str] = None,
           size: Optional[int] = None) -> Optional[str]:
    """None when `path` matches every given expectation, else a message saying what differs."""
    if size is not None and path.stat().st_size != size:
        return f"size {path.stat().st_size} bytes, expected {size}"
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo} {got}, expected {want}"
    return None


def download_file(url: str, dest: Path, *, sha256: Optional[str] = None, md5: Optional[str] = None,
                  size: Optional[int] = None, retries: int = 3, timeout: float = 60.0,
                  show_progress: bool = False) -> Path:
    """Fetch `url` to `dest` via `dest.part` (resumed across attempts and runs); verify; rename. Skip if done."""
    dest = Path(dest)
    if dest.exists():
        problem = verify(dest, sha256=sha256, md5=md5, size=size)
        if problem is None:
            log.info("%s: present and verified", dest)
            return dest
        log.warning("%s exists but %s; downloading it again", dest, problem)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(desc=dest.name, unit="B", unit_scale=True, leave=False)
    try:
        for attempt in range(retries + 1):
            try:
                _fetch_to_part(url, part, timeout, bar.update if bar else None)
                break
            except urllib.error.HTTPError as err:
                if err.code < 500 or attempt == retries:
                    raise DownloadError(f"{url} -> {dest}: HTTP {err.code} {err.reason}") from None
            except _TRANSIENT as err:
                kept = part.stat().st_size if part.exists() else 0
                if attempt == retries:
                    raise DownloadError(f"{url} -> {dest}: {type(err).__name__}: {err} ({kept} bytes kept in "
                                        f"{part.name}; rerun to resume)") from None
                log.warning("%s: %s; resuming from byte %d (attempt %d of %d)", url, err, kept, attempt + 2,
                            retries + 1)
            time.sleep(min(0.5 * 2 ** attempt, 30))
    finally:
        if bar is not None:
            bar.close()
    problem = verify(part, sha256=sha256, md5=md5, size=size)
    if problem is not None:
        part.unlink()
        raise ChecksumError(f"{url} -> {dest}: downloaded file has {problem}; deleted it (not resumable)")
    os.replace(part, dest)
    return dest


# --- sources --------------------------------------------------------------------------------------------------------

def parse_md5(text: str, name: str) -> str:
    """NLM's .md5 files read "MD5(pubmed25n0001.xml.gz)= <hex>"; a bare "<hex>  name" line also works."""
    m = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    if not m:
        raise DownloadError(f"{name}.md5: no MD5 checksum in {text[:80]!r}")
    return m.group(1).lower()


def list_index(base_url: str, pattern: str, retries: int = 3) -> list[str]:
    html = fetch_bytes(base_url, retries=retries).decode("utf-8", "replace")
    names = sorted(set(re.findall(rf'href="(?:[^"]*/)?({pattern})"', html)))
    if not names:
        raise DownloadError(f"{base_url}: no files matching {pattern} in the index page")
    return names


def _select(names: list, files: Optional[str], limit: Optional[int]) -> list:
    if files:
        a, _, b = files.partition(":")
        names = names[int(a) if a else 0 : int(b) if b else len(names)]
    return names[:limit] if limit else names


def download(name: str, dest: Optional[Path] = None, base_url: Optional[str] = None, *, files: Optional[str] = None,
             limit: Optional[int] = None, retries: int = 3, timeout: float = 60.0,
             show_progress: bool = False) -> list[Path]:
    """Download every file of source `name`; returns the final paths. Raises DownloadError after trying them all."""
    if name not in SOURCES:
        raise DownloadError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    base = (base_url or src.base_url).rstrip("/") + "/"
    dest = Path(dest or src.dest)
    done, errors = [], []
    if src.listing:
        names = _select(list_index(base, src.listing, retries), files, limit)
        for fname in names:
            try:
                md5_text = fetch_bytes(base + fname + ".md5", timeout, retries).decode("ascii", "replace")
                md5 = parse_md5(md5_text, fname)
                path = download_file(base + fname, dest / fname, md5=md5, retries=retries, timeout=timeout,
                                     show_progress=show_progress)
                from biogpt_train.utils import atomic_write

                atomic_write(dest / (fname + ".md5"), md5_text)
                done.append(path)
            except DownloadError as err:
                log.error("%s", err)
                errors.append(str(err))
    else:
        for spec in _select(list(src.files), files, limit):
            try:
                done.append(download_file(base + spec.name, dest / spec.name, sha256=spec.sha256,
                                          size=None if spec.sha256 else spec.size, retries=retries,
                                          timeout=timeout, show_progress=show_progress))
            except DownloadError as err:
                log.error("%s", err)
                errors.append(str(err))
    if errors:
        raise DownloadError(f"{len(errors)} of {len(errors) + len(done)} file(s) failed: " + " | ".join(errors))
    return done


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.download", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", choices=sorted(SOURCES), help="what to download")
    p.add_argument("--dest", type=Path, help="target directory (default: the source's, relative to the cwd)")
    p.add_argument("--base-url", help="mirror URL replacing the default base (relative names are kept)")
    p.add_argument("--files", help="START:END slice of the file list (e.g. 0:100 for the first 100 baseline files)")
    p.add_argument("--limit", type=int, help="at most this many files")
    p.add_argument("--retries", type=int, default=3, help="attempts per file after the first (resuming)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if a.list or not a.name:
        for key, src in SOURCES.items():
            print(f"{key:24s} {src.base_url}\n{'':24s} -> {src.dest}: {src.about}")
        return 0 if a.list else 2
    try:
        paths = download(a.name, a.dest, a.base_url, files=a.files, limit=a.limit, retries=a.retries,
                         timeout=a.timeout, show_progress=not a.quiet)
    except DownloadError as err:
        print(f"download: error: {err}", file=sys.stderr)
        return 1
    print(f"{a.name}: {len(paths)} file(s) in {a.dest or SOURCES[a.name].dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
