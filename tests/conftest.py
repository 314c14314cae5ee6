"""Shared fixtures. Tests that need ../shared/data skip with a clear reason when it is absent."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
BIOGPT_DICT = SHARED_DATA / "tokenizer" / "BioGPT" / "dict.txt"
BIOGPT_BPE = SHARED_DATA / "tokenizer" / "BioGPT" / "bpecodes"
BIOGPT_LARGE_DICT = SHARED_DATA / "tokenizer" / "BioGPT-Large" / "dict.txt"
BIOGPT_LARGE_BPE = SHARED_DATA / "tokenizer" / "BioGPT-Large" / "bpecodes"


def require_shared(*relative: str) -> Path:
    """Return SHARED_DATA/relative, or skip the test saying which file is missing."""
    path = SHARED_DATA.joinpath(*relative)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared real data, beside the checkout); not present here")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def biogpt_tokenizer_files():
    return require_shared("tokenizer", "BioGPT", "dict.txt"), require_shared("tokenizer", "BioGPT", "bpecodes")


@pytest.fixture
def single_torch_thread():
    """Tiny models on a few shared CPU cores: intra-op threads only add contention (often ~10x slower)."""
    import torch  # here, not at the top: most test modules never need it

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def transformers():
    """The HF reference (a dev extra): only the tests that compare against it skip when it is absent."""
    return pytest.importorskip("transformers")
