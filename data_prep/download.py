"""`python -m data_prep.download NAME [--dest DIR] [--base-url URL] [...]`: fetch raw data and released weights
with resume + checksums.

NAME (see `--list`):
  pubmed_baseline         NLM's annual baseline, pubmedYYnNNNN.xml.gz + .md5 (file list read from the index page)
  pubmedqa                ori_pqal.json, test_ground_truth.json (pubmedqa/pubmedqa, pinned commit)
  biogpt_tasks            BioGPT's raw task files (data/{BC5CDR,DDI,KD-DTI,HoC}/raw/..., pinned commit)
  biogpt_tokenizer        BioGPT's dict.txt + bpecodes
  biogpt_large_tokenizer  BioGPT-Large's dict.txt + bpecodes
  Pre-trained-BioGPT, Pre-trained-BioGPT-Large, QA-PubMedQA-BioGPT, QA-PubMedQA-BioGPT-Large, RE-BC5CDR-BioGPT,
  RE-DDI-BioGPT, RE-DTI-BioGPT, DC-HoC-BioGPT
                          BioGPT's released fairseq checkpoints (the .tgz links of its README at the pinned commit),
                          unpacked into <dest>/NAME/ (default dest: the checkout's checkpoints/ = paths.pretrained)
  ORG/NAME                a Hugging Face Hub repository (e.g. microsoft/biogpt), via huggingface_hub.snapshot_download,
                          into <dest>/NAME/

Archives: the .tgz is fetched like any file (resumable), then extracted into a temporary directory beside the
destination and renamed into place, so `<dest>/NAME/` exists only when complete; the .tgz is then deleted
(`--keep-archive` keeps it). BioGPT publishes no checksums for them: the sha256 of the first download is recorded in
`<dest>/NAME.tgz.sha256` and later downloads of the same archive must match it.

Every file goes to `<dest>/<name>.part` first. An interrupted transfer is resumed with an HTTP Range request (a server
that ignores Range restarts it from zero), retried `--retries` times; the finished file is checked (PubMed: the .md5
published next to it; others: the sha256 recorded below when we have it, else the expected size) and only then renamed
to its final name. A mismatch deletes the .part and fails naming the file: no partial or corrupt file ever sits under
the final name. Files already present and verified are skipped, so rerunning the command resumes the whole set.

The URLs are defaults: `--base-url` points a NAME at a mirror (the relative file names stay the same).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.request
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("data_prep.download")

BIOGPT_COMMIT = "648f7d6503c038b44e70b7510bf431c7be94e891"  # reference commit (biogpt-reference.md)
PUBMEDQA_COMMIT = "1cbae8e92f72f20c8d3747cbb3bf5bc53554d997"
BIOGPT_RAW = f"https://raw.githubusercontent.com/microsoft/BioGPT/{BIOGPT_COMMIT}/data/"
USER_AGENT = "biogpt-train-data-prep/0.1 (+python urllib)"
CHUNK = 1 << 20
REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS_DIR = REPO / "checkpoints"  # the schema's paths.pretrained = ${paths.root}/checkpoints
CHECKPOINTS_URL = "https://msralaphilly2.blob.core.windows.net/release/BioGPT/checkpoints/"


class DownloadError(Exception):
    """A file could not be fetched (after retries); names the URL and the destination."""


class ChecksumError(DownloadError):
    """The fetched bytes do not match the published/recorded checksum or size."""


@dataclass(frozen=True)
class FileSpec:
    name: str                      # path relative to the source's base URL and to --dest
    sha256: Optional[str] = None   # recorded from the reference copies (../shared/data), when we have them
    size: Optional[int] = None     # bytes, from biogpt-reference.md §9, when no sha256 is known
    query: Optional[str] = None    # appended to the default URL only (read-only SAS tokens of BioGPT's README)


@dataclass(frozen=True)
class Source:
    base_url: str
    files: tuple = ()
    dest: str = "data/raw"
    listing: Optional[str] = None  # regex of file names to take from the base URL's index page (with .md5 files)
    about: str = ""
    archive: bool = False          # each file is a .tgz unpacked into dest/<name without .tgz>/
    expect: Optional[str] = None   # archives: the checkpoint file the unpacked directory should hold


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


# BioGPT's README at BIOGPT_COMMIT: name -> (the read-only SAS query of its .tgz link, the checkpoint file the
# archive holds (biogpt-reference.md §2.1), description). No checksums are published for these archives.
CHECKPOINTS = {
    "Pre-trained-BioGPT": (
        "sp=r&st=2023-11-13T15:37:35Z&se=2099-12-30T23:37:35Z&spr=https&sv=2022-11-02&sr=b&sig=3CcG1TOhqJPBhkVutvVn3PtUq0vPyLBgwggUfojypfY%3D",
        "checkpoint.pt", "pre-trained BioGPT (347M)"),
    "Pre-trained-BioGPT-Large": (
        "sp=r&st=2023-11-13T15:38:13Z&se=2099-12-30T23:38:13Z&spr=https&sv=2022-11-02&sr=b&sig=ib1SZut9wAwrsxGWtFtIZDhrnRg92dwPJmoY2lr3MTg%3D",
        "checkpoint.pt", "pre-trained BioGPT-Large (1.5B)"),
    "QA-PubMedQA-BioGPT": (
        "sp=r&st=2023-11-13T15:38:43Z&se=2099-12-30T23:38:43Z&spr=https&sv=2022-11-02&sr=b&sig=A5SQae6ifsXmrsgpj4E2flhyXm4iHc%2FqO5b8HGOMyjc%3D",
        "checkpoint.pt", "BioGPT fine-tuned on PubMedQA"),
    "QA-PubMedQA-BioGPT-Large": (
        "sp=r&st=2023-11-13T15:39:40Z&se=2099-12-30T23:39:40Z&spr=https&sv=2022-11-02&sr=b&sig=t%2B%2FD%2BxVoIxiuyDsD0VXv%2FjSGoS0VcrdVXycYhWZoxUc%3D",
        "checkpoint.pt", "BioGPT-Large fine-tuned on PubMedQA"),
    "RE-BC5CDR-BioGPT": (
        "sp=r&st=2023-11-13T15:35:14Z&se=2099-12-30T23:35:14Z&spr=https&sv=2022-11-02&sr=b&sig=uXlLIHlVeKIbS%2BVmdzAmlNCeKdoKO2lxsSmwSi%2FH8nE%3D",
        "checkpoint_avg.pt", "BioGPT fine-tuned on BC5CDR"),
    "RE-DDI-BioGPT": (
        "sp=r&st=2023-11-13T15:35:58Z&se=2099-12-30T23:35:58Z&spr=https&sv=2022-11-02&sr=b&sig=DkaQMuM%2FXAsM2p8%2BUs45ecuqhlSRF1DUYRBJNcxD6Pk%3D",
        "checkpoint_avg.pt", "BioGPT fine-tuned on DDI"),
    "RE-DTI-BioGPT": (
        "sp=r&st=2023-11-13T15:36:23Z&se=2099-12-30T23:36:23Z&spr=https&sv=2022-11-02&sr=b&sig=bRgUZyqGuwYdM%2FVFzIv6Xa0GThkXq6bVzszmTe9c%2BKM%3D",
        "checkpoint_avg.pt", "BioGPT fine-tuned on KD-DTI"),
    "DC-HoC-BioGPT": (
        "sp=r&st=2023-11-13T15:37:17Z&se=2099-12-30T23:37:17Z&spr=https&sv=2022-11-02&sr=b&sig=1DxroWPt%2FBppCTy7QHs842lLy8SQRcUeUwSfMzDFvl0%3D",
        "checkpoint_last.pt", "BioGPT fine-tuned on HoC"),
}
SOURCES.update({
    name: Source(CHECKPOINTS_URL, files=(FileSpec(f"{name}.tgz", query=query),), dest=str(CHECKPOINTS_DIR),
                 archive=True, expect=expect, about=f"{about}: fairseq {expect}, no published checksum")
    for name, (query, expect, about) in CHECKPOINTS.items()
})


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


def _url(base: str, spec: FileSpec, default_base: bool) -> str:
    # The SAS query belongs to the default host; a mirror serves the bare names.
    return base + spec.name + (f"?{spec.query}" if spec.query and default_base else "")


def download(name: str, dest: Optional[Path] = None, base_url: Optional[str] = None, *, files: Optional[str] = None,
             limit: Optional[int] = None, retries: int = 3, timeout: float = 60.0,
             show_progress: bool = False, keep_archive: bool = False, revision: Optional[str] = None) -> list[Path]:
    """Download every file of source `name` (or the Hub repository `org/name`); returns the final paths (for
    archives and Hub repositories: the unpacked directory). Raises DownloadError after trying them all."""
    if name not in SOURCES and is_hub_id(name):
        return [download_hub(name, Path(dest) if dest else CHECKPOINTS_DIR, revision=revision)]
    if name not in SOURCES:
        raise DownloadError(f"unknown source {name!r}; known: {', '.join(SOURCES)}, or a Hugging Face Hub id "
                            "ORG/NAME (e.g. microsoft/biogpt)")
    src = SOURCES[name]
    base = (base_url or src.base_url).rstrip("/") + "/"
    default_base = base_url is None
    dest = Path(dest or src.dest)
    from data_prep.checks import OutputPathError, check_writable_dir

    try:
        check_writable_dir(dest, "--dest")
    except OutputPathError as err:
        raise DownloadError(str(err)) from None
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
            except DownloadError as err:  # reported once, in the error raised below
                errors.append(str(err))
    else:
        for spec in _select(list(src.files), files, limit):
            try:
                if src.archive:
                    done.append(download_archive(_url(base, spec, default_base), dest, spec, expect=src.expect,
                                                 keep_archive=keep_archive, retries=retries, timeout=timeout,
                                                 show_progress=show_progress))
                    continue
                done.append(download_file(_url(base, spec, default_base), dest / spec.name, sha256=spec.sha256,
                                          size=None if spec.sha256 else spec.size, retries=retries,
                                          timeout=timeout, show_progress=show_progress))
            except DownloadError as err:  # reported once, in the error raised below
                errors.append(str(err))
    if errors:
        raise DownloadError(f"{len(errors)} of {len(errors) + len(done)} file(s) failed: " + " | ".join(errors))
    return done


# --- archives (BioGPT's released checkpoints) -----------------------------------------------------------------------

def archive_stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_sidecar(path: Path) -> Optional[str]:
    """The sha256 recorded by an earlier download (``sha256sum`` format), or None."""
    try:
        text = path.read_text(encoding="ascii")
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    m = re.match(r"\s*([0-9a-fA-F]{64})\b", text)
    return m.group(1).lower() if m else None


def extract_atomic(archive: Path, final: Path) -> Path:
    """Unpack `archive` into a temporary directory beside `final`, then rename it to `final` (one rename).

    A single top-level directory in the archive (``Pre-trained-BioGPT/checkpoint.pt``) becomes `final` itself.
    Members that would land outside the directory (absolute paths, ``..``, links out, devices) are refused
    (tarfile's "data" filter)."""
    final = Path(final)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):  # leftovers of killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp, members=_safe_members(tar))
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DownloadError(f"{archive}: cannot unpack it ({type(err).__name__}: {err}); delete it and rerun to "
                                "download it again") from None
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        try:
            os.rename(root, final)
        except OSError as err:
            raise DownloadError(f"cannot move the unpacked {archive.name} to {final}: {err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _safe_members(tar: tarfile.TarFile):
    """What the "data" filter allows, for Pythons without it: regular files and directories inside the target."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"refusing member {member.name!r} (outside the target, a link or a device)")
        yield member


def download_archive(url: str, dest: Path, spec: FileSpec, *, expect: Optional[str] = None,
                     keep_archive: bool = False, retries: int = 3, timeout: float = 60.0,
                     show_progress: bool = False) -> Path:
    """`dest/<stem>/` from a .tgz: fetched (resumable) and verified, unpacked atomically. Skipped when present.

    Without a published sha256, the first download's is written to `dest/<name>.sha256` and later downloads of
    the same archive must match it (a changed or corrupt file is refused, not silently unpacked)."""
    dest = Path(dest)
    final = dest / archive_stem(spec.name)
    if final.is_dir():
        log.info("%s: present (delete it to download again)", final)
        return final
    archive, sidecar = dest / spec.name, dest / (spec.name + ".sha256")
    recorded = read_sidecar(sidecar)
    want = spec.sha256 or recorded
    try:
        download_file(url, archive, sha256=want, size=None if want else spec.size, retries=retries,
                      timeout=timeout, show_progress=show_progress)
    except ChecksumError as err:
        if spec.sha256 is None and recorded:
            raise ChecksumError(f"{err}; the expected sha256 is the one recorded in {sidecar} at the first "
                                "download: the file on the server changed or the transfer is corrupt (delete the "
                                "sidecar to accept the new file)") from None
        raise
    if not want:
        digest = file_digest(archive, "sha256")
        from biogpt_train.utils import atomic_write

        atomic_write(sidecar, f"{digest}  {spec.name}\n")
        log.warning("%s: no published checksum; recorded its sha256 %s in %s", spec.name, digest, sidecar)
    extract_atomic(archive, final)
    if expect and not (final / expect).is_file():
        found = sorted(str(p.relative_to(final)) for p in final.rglob("*.pt"))[:5]
        log.warning("%s: expected %s inside, found %s", final, expect, found or "no .pt file")
    if not keep_archive:
        archive.unlink()
    return final


# --- Hugging Face Hub -----------------------------------------------------------------------------------------------

def is_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", name))


def _hub_problem(err: Exception) -> str:
    kinds = {c.__name__ for c in type(err).__mro__}
    if kinds & {"RepositoryNotFoundError", "GatedRepoError"}:
        return "no such (public) repository on the Hub; check the id"
    if "RevisionNotFoundError" in kinds:
        return "no such revision in that repository"
    if kinds & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectError", "Timeout",
                "TimeoutException", "ConnectTimeout", "NameResolutionError"}:
        return ("the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and no cached copy exists: connect, set "
                "HF_ENDPOINT to a mirror, or download the fairseq archive with "
                "`python -m data_prep.download Pre-trained-BioGPT` where there is a network")
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first}"


def download_hub(repo_id: str, dest: Path, revision: Optional[str] = None) -> Path:
    """A Hub repository's files in `dest/<name>/` (huggingface_hub.snapshot_download; resumes, uses its cache)."""
    from data_prep.checks import OutputPathError, check_writable_dir

    target = Path(dest) / repo_id.split("/")[-1]
    try:
        check_writable_dir(target, "--dest")
    except OutputPathError as err:
        raise DownloadError(str(err)) from None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DownloadError(f"{repo_id}: huggingface_hub is not installed (pip install huggingface_hub), or download "
                            "the fairseq archive instead: python -m data_prep.download Pre-trained-BioGPT") from None
    try:
        path = snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(target))
    except Exception as err:  # noqa: BLE001 - every failure of the Hub client becomes one line naming the remedy
        raise DownloadError(f"{repo_id} -> {target}: {_hub_problem(err)}") from None
    return Path(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_prep.download", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="what to download: a name of --list, or a Hub id ORG/NAME")
    p.add_argument("--dest", type=Path, help="target directory (default: the source's, relative to the cwd; "
                                             f"checkpoints and Hub ids: {CHECKPOINTS_DIR})")
    p.add_argument("--base-url", help="mirror URL replacing the default base (relative names are kept)")
    p.add_argument("--files", help="START:END slice of the file list (e.g. 0:100 for the first 100 baseline files)")
    p.add_argument("--limit", type=int, help="at most this many files")
    p.add_argument("--retries", type=int, default=3, help="attempts per file after the first (resuming)")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
    p.add_argument("--keep-archive", action="store_true", help="keep checkpoint .tgz files after unpacking them")
    p.add_argument("--revision", help="Hub ids: branch, tag or commit (default: main)")
    p.add_argument("--list", action="store_true", help="list the sources and exit")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s %(message)s")
    if a.list or not a.name:
        for key, src in SOURCES.items():
            print(f"{key:24s} {src.base_url}\n{'':24s} -> {src.dest}: {src.about}")
        return 0 if a.list else 2
    if a.name not in SOURCES and not is_hub_id(a.name):
        p.error(f"unknown source {a.name!r}: use one of --list, or a Hugging Face Hub id ORG/NAME")
    try:
        paths = download(a.name, a.dest, a.base_url, files=a.files, limit=a.limit, retries=a.retries,
                         timeout=a.timeout, show_progress=not a.quiet, keep_archive=a.keep_archive,
                         revision=a.revision)
    except DownloadError as err:
        print(f"download: error: {err}", file=sys.stderr)
        return 1
    if a.name in SOURCES and not SOURCES[a.name].archive:
        print(f"{a.name}: {len(paths)} file(s) in {a.dest or SOURCES[a.name].dest}")
    else:
        print(f"{a.name}: {paths[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
