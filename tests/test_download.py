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
