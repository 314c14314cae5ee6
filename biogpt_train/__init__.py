"""biogpt-train: a fairseq-style, Hydra-configured framework that reproduces BioGPT.

Public API (imported lazily so `import biogpt_train` stays cheap):
    load_pretrained(path) -> TransformerLM in eval mode on CPU (fairseq, HF or native checkpoint)
    Tokenizer.from_files(dict_txt, bpecodes)
"""

__version__ = "0.1.0"

__all__ = ["load_pretrained", "Tokenizer", "Dictionary", "TransformerLM", "__version__"]


def __getattr__(name):
    if name == "load_pretrained":
        from biogpt_train.checkpoint.io import load_pretrained

        return load_pretrained
    if name == "Tokenizer":
        from biogpt_train.data.tokenizer import Tokenizer

        return Tokenizer
    if name == "Dictionary":
        from biogpt_train.data.dictionary import Dictionary

        return Dictionary
    if name == "TransformerLM":
        from biogpt_train.models.biogpt import TransformerLM

        return TransformerLM
    raise AttributeError(f"module 'biogpt_train' has no attribute {name!r}")
