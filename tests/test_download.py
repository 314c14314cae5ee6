"""data_prep.download against a loopback HTTP server (127.0.0.1, ephemeral port, thread) serving ../shared/data
under /shared/ and a per-test directory under /local/, with HTTP Range support and injectable faults."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, require_shared
from data_prep import download as dl


class Server:
    def __init__(self, local_root: Path):
        self.local_root = local_root
        self.truncate_once: dict[str, int] = {}  # path -> bytes to send before dropping the connection (once)
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def resolve(self, path: str) -> Path | None:
        for prefix, root in (("/shared/", SHARED_DATA), ("/local/", self.local_root)):
            if path.startswith(prefix):
                target = (root / path[len(prefix):]).resolve()
                return target if target.is_relative_to(root.resolve()) else None
        return None

    def handle(self, h):
        path = h.path.split("?")[0]
        rng = h.headers.get("Range")
        target = self.resolve(path)
        if target is not None and target.is_dir():
            names = sorted(p.name for p in target.iterdir())
            body = "".join(f'<a href="{n}">{n}</a>\n' for n in names).encode()
            self._send(h, 200, body, path, rng)
            return
        if target is None or not target.is_file():
            self.requests.append((path, rng, 404))
            h.send_error(404)
            return
        data = target.read_bytes()
        start = 0
        if rng and path not in self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.requests.append((path, rng, 416))
                h.send_error(416)
                return
        status = 206 if start else 200
        cut = self.truncate_once.pop(path, None)
        self.requests.append((path, rng, status))
        h.send_response(status)
        h.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        body = data[start:]
        if cut is not None:
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True  # the client sees fewer bytes than Content-Length
            return
        h.wfile.write(body)

    def _send(self, h, status, body, path, rng):
        self.requests.append((path, rng, status))
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    local = tmp_path / "served"
    local.mkdir()
    s = Server(local)
    yield s
    s.close()


def test_tokenizer_download_verifies_sha256(server, tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    dest = tmp_path / "tok"
    paths = dl.download("biogpt_tokenizer", dest, f"{server.url}/shared/tokenizer/BioGPT/", retries=0)
    assert sorted(p.name for p in paths) == ["bpecodes", "dict.txt"]
    for name in ("dict.txt", "bpecodes"):
        assert (dest / name).read_bytes() == (SHARED_DATA / "tokenizer" / "BioGPT" / name).read_bytes()
    assert not list(dest.glob("*.part"))
    # a second run finds both files verified and sends no request for them
    n = len(server.requests)
    dl.download("biogpt_tokenizer", dest, f"{server.url}/shared/tokenizer/BioGPT/", retries=0)
    assert len(server.requests) == n


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    src = SHARED_DATA / "tokenizer" / "BioGPT" / "dict.txt"
    url = f"{server.url}/shared/tokenizer/BioGPT/dict.txt"
    dest = tmp_path / "out" / "dict.txt"
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    server.truncate_once["/shared/tokenizer/BioGPT/dict.txt"] = 100_000
    with pytest.raises(dl.DownloadError, match="dict.txt"):
        dl.download_file(url, dest, sha256=sha, retries=0)
    part = dest.with_name("dict.txt.part")
    assert not dest.exists(), "a partial file must never appear under the final name"
    assert part.stat().st_size == 100_000
    dl.download_file(url, dest, sha256=sha, retries=0)  # the rerun resumes
    assert dest.read_bytes() == src.read_bytes() and not part.exists()
    assert server.requests[-1] == ("/shared/tokenizer/BioGPT/dict.txt", "bytes=100000-", 206)


def test_retry_within_one_call_and_server_without_range(server, tmp_path):
    require_shared("tokenizer", "BioGPT", "bpecodes")
    src = SHARED_DATA / "tokenizer" / "BioGPT" / "bpecodes"
    path = "/shared/tokenizer/BioGPT/bpecodes"
    server.truncate_once[path] = 1234
    server.ignore_range.add(path)  # this server answers 200 with the whole file: the client must start over
    dest = tmp_path / "bpecodes"
    dl.download_file(server.url + path, dest, size=src.stat().st_size, retries=2)
    assert dest.read_bytes() == src.read_bytes()
    assert [r[2] for r in server.requests] == [200, 200]


def _baseline_dir(local: Path, n: int = 2) -> list[str]:
    """A fake baseline: gzipped real PubMed XML samples with NLM-style .md5 files."""
    xml = sorted((require_shared("pubmed_xml", "biopython_Tests_Entrez")).glob("*.xml"))[:n]
    names = []
    for i, src in enumerate(xml, 1):
        name = f"pubmed99n{i:04d}.xml.gz"
        data = gzip.compress(src.read_bytes(), mtime=0)
        (local / name).write_bytes(data)
        (local / (name + ".md5")).write_text(f"MD5({name})= {hashlib.md5(data).hexdigest()}\n")
        names.append(name)
    (local / "README.txt").write_text("not a baseline file\n")
    return names


def test_pubmed_baseline_listing_and_md5(server, tmp_path):
    names = _baseline_dir(server.local_root)
    dest = tmp_path / "baseline"
    paths = dl.download("pubmed_baseline", dest, f"{server.url}/local/", retries=0)
    assert [p.name for p in paths] == names
    for n in names:
        assert (dest / n).read_bytes() == (server.local_root / n).read_bytes()
        assert (dest / (n + ".md5")).exists()
    # --files slices the listing
    assert [p.name for p in dl.download("pubmed_baseline", dest, f"{server.url}/local/", files="1:")] == names[1:]


def test_checksum_mismatch_fails_naming_the_file_and_keeps_nothing(server, tmp_path):
    names = _baseline_dir(server.local_root)
    bad = names[0]
    (server.local_root / (bad + ".md5")).write_text(f"MD5({bad})= {'0' * 32}\n")
    dest = tmp_path / "baseline"
    with pytest.raises(dl.DownloadError, match=rf"{bad}.*md5") as exc:
        dl.download("pubmed_baseline", dest, f"{server.url}/local/", retries=0)
    assert "1 of 2 file(s) failed" in str(exc.value)
    assert not (dest / bad).exists() and not (dest / (bad + ".part")).exists()
    assert (dest / names[1]).exists()  # the other file still completed


def test_existing_corrupt_file_is_replaced(server, tmp_path):
    require_shared("tokenizer", "BioGPT", "dict.txt")
    dest = tmp_path / "tok"
    dest.mkdir()
    (dest / "dict.txt").write_text("garbage\n")
    dl.download("biogpt_tokenizer", dest, f"{server.url}/shared/tokenizer/BioGPT/", retries=0)
    assert (dest / "dict.txt").read_bytes() == (SHARED_DATA / "tokenizer" / "BioGPT" / "dict.txt").read_bytes()


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download("pubmedqa", tmp_path / "qa", f"{server.url}/local/", retries=0)
    assert not list((tmp_path / "qa").glob("*")) if (tmp_path / "qa").exists() else True


def test_cli_list_and_sources_are_pinned(capsys):
    assert dl.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("pubmed_baseline", "pubmedqa", "biogpt_tasks", "biogpt_tokenizer", "biogpt_large_tokenizer"):
        assert name in out
    assert dl.BIOGPT_COMMIT in dl.SOURCES["biogpt_tokenizer"].base_url
    assert dl.PUBMEDQA_COMMIT in dl.SOURCES["pubmedqa"].base_url


def test_recorded_sha256_match_the_reference_copies():
    """The checksums recorded in SOURCES are those of the files in ../shared/data (same bytes as upstream)."""
    require_shared("tokenizer", "BioGPT", "dict.txt")
    checked = 0
    for key, rel in (("biogpt_tokenizer", "tokenizer/BioGPT"), ("biogpt_large_tokenizer", "tokenizer/BioGPT-Large"),
                     ("biogpt_tasks", "")):
        for spec in dl.SOURCES[key].files:
            local = SHARED_DATA / rel / spec.name
            if spec.sha256 and local.exists():
                assert hashlib.sha256(local.read_bytes()).hexdigest() == spec.sha256, local
                checked += 1
    assert checked >= 10


def test_parse_md5_formats():
    h = "d41d8cd98f00b204e9800998ecf8427e"
    assert dl.parse_md5(f"MD5(pubmed25n0001.xml.gz)= {h}\n", "x") == h
    assert dl.parse_md5(f"{h.upper()}  pubmed25n0001.xml.gz\n", "x") == h
    with pytest.raises(dl.DownloadError, match="no MD5"):
        dl.parse_md5("nothing here", "pubmed25n0001.xml.gz")


# --------------------------------------------------------------------------------- released checkpoints (.tgz)

def _tgz(path: Path, members: dict[str, bytes]) -> bytes:
    """A gzipped tar holding `members` (name -> bytes); returns its bytes."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


CKPT = {"Pre-trained-BioGPT/checkpoint.pt": b"\x80fake-weights" * 50_000, "Pre-trained-BioGPT/dict.txt": b"a 1\n"}


def test_checkpoint_archive_resumes_verifies_and_unpacks_atomically(server, tmp_path):
    data = _tgz(server.local_root / "Pre-trained-BioGPT.tgz", CKPT)
    dest = tmp_path / "checkpoints"
    base = f"{server.url}/local/"
    server.truncate_once["/local/Pre-trained-BioGPT.tgz"] = len(data) // 2
    with pytest.raises(dl.DownloadError, match="Pre-trained-BioGPT.tgz"):
        dl.download("Pre-trained-BioGPT", dest, base, retries=0)
    assert not (dest / "Pre-trained-BioGPT").exists()  # nothing under the final name until complete
    assert (dest / "Pre-trained-BioGPT.tgz.part").stat().st_size == len(data) // 2
    [path] = dl.download("Pre-trained-BioGPT", dest, base, retries=0)  # resumes with Range
    assert server.requests[-1] == ("/local/Pre-trained-BioGPT.tgz", f"bytes={len(data) // 2}-", 206)
    assert path == dest / "Pre-trained-BioGPT"
    assert (path / "checkpoint.pt").read_bytes() == CKPT["Pre-trained-BioGPT/checkpoint.pt"]
    assert sorted(p.name for p in dest.iterdir()) == ["Pre-trained-BioGPT", "Pre-trained-BioGPT.tgz.sha256"]
    sidecar = (dest / "Pre-trained-BioGPT.tgz.sha256").read_text()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  Pre-trained-BioGPT.tgz\n"  # no published checksum
    n = len(server.requests)
    assert dl.download("Pre-trained-BioGPT", dest, base) == [path] and len(server.requests) == n  # present
    # the server's archive changes: the recorded sha256 refuses it, and nothing is unpacked
    import shutil

    shutil.rmtree(path)
    _tgz(server.local_root / "Pre-trained-BioGPT.tgz", {"Pre-trained-BioGPT/checkpoint.pt": b"other"})
    with pytest.raises(dl.DownloadError, match=r"recorded in .*Pre-trained-BioGPT\.tgz\.sha256 at the first"):
        dl.download("Pre-trained-BioGPT", dest, base, retries=0)
    assert not path.exists() and not list(dest.glob(".*tmp*")) and not list(dest.glob("*.part"))


def test_archive_layouts_and_unsafe_members(server, tmp_path):
    dest = tmp_path / "ckpt"
    _tgz(server.local_root / "DC-HoC-BioGPT.tgz", {"checkpoint_last.pt": b"w", "dict.txt": b"d"})  # loose files
    [path] = dl.download("DC-HoC-BioGPT", dest, f"{server.url}/local/", retries=0, keep_archive=True)
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint_last.pt", "dict.txt"]
    assert (dest / "DC-HoC-BioGPT.tgz").is_file()  # --keep-archive
    _tgz(server.local_root / "RE-DDI-BioGPT.tgz", {"RE-DDI-BioGPT/../../evil.pt": b"x"})
    with pytest.raises(dl.DownloadError, match=r"RE-DDI-BioGPT\.tgz: cannot unpack it"):
        dl.download("RE-DDI-BioGPT", dest, f"{server.url}/local/", retries=0)
    assert not (dest / "RE-DDI-BioGPT").exists() and not (tmp_path / "evil.pt").exists()
    assert not list(dest.glob(".RE-DDI-BioGPT.tmp-*"))
    import tarfile  # the same refusal on Pythons without tarfile's "data" filter

    with tarfile.open(server.local_root / "RE-DDI-BioGPT.tgz") as tar, pytest.raises(tarfile.TarError, match="evil"):
        list(dl._safe_members(tar))


def test_checkpoint_sources_follow_biogpt_readme():
    from biogpt_train.config.schema import REPO_ROOT

    names = ["Pre-trained-BioGPT", "Pre-trained-BioGPT-Large", "QA-PubMedQA-BioGPT", "QA-PubMedQA-BioGPT-Large",
             "RE-BC5CDR-BioGPT", "RE-DDI-BioGPT", "RE-DTI-BioGPT", "DC-HoC-BioGPT"]
    assert list(dl.CHECKPOINTS) == names
    for name in names:
        src = dl.SOURCES[name]
        assert src.archive and [f.name for f in src.files] == [f"{name}.tgz"]
        # the default destination is what paths.pretrained (${paths.root}/checkpoints) points at
        assert Path(src.dest) == Path(REPO_ROOT) / "checkpoints"
    spec = dl.SOURCES["Pre-trained-BioGPT"].files[0]
    assert dl._url(dl.CHECKPOINTS_URL, spec, True) == (
        "https://msralaphilly2.blob.core.windows.net/release/BioGPT/checkpoints/Pre-trained-BioGPT.tgz?sp=r&"
        "st=2023-11-13T15:37:35Z&se=2099-12-30T23:37:35Z&spr=https&sv=2022-11-02&sr=b&"
        "sig=3CcG1TOhqJPBhkVutvVn3PtUq0vPyLBgwggUfojypfY%3D")
    assert dl._url("http://mirror/x/", spec, False) == "http://mirror/x/Pre-trained-BioGPT.tgz"  # no SAS token
    from biogpt_train.config.schema import PathsConfig

    assert PathsConfig().pretrained == "${paths.root}/checkpoints"


# ------------------------------------------------------------------------------------------ Hugging Face Hub

def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, **kw):
        calls.append((repo_id, revision, local_dir))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text("{}")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    [path] = dl.download("microsoft/biogpt", tmp_path / "ckpt", revision="main")
    assert path == tmp_path / "ckpt" / "biogpt" and (path / "config.json").is_file()
    assert calls == [("microsoft/biogpt", "main", str(tmp_path / "ckpt" / "biogpt"))]


def test_hub_offline_and_missing_client_are_one_line(tmp_path, monkeypatch, capsys):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kw):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled.\nTo enable ...")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert dl.main(["microsoft/biogpt", "--dest", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"download: error: microsoft/biogpt -> {tmp_path / 'biogpt'}: the "
                                               "Hub cannot be reached (offline")
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # not installed
    with pytest.raises(dl.DownloadError, match="huggingface_hub is not installed"):
        dl.download("microsoft/biogpt", tmp_path)
    with pytest.raises(SystemExit):
        dl.main(["no_such_source"])
