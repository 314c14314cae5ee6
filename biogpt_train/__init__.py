"""biogpt-train: a fairseq-style, Hydra-configured framework that reproduces BioGPT and trains, fine-tunes and
compares three model families (BioGPT, Llama-style decoders, ELECTRA/BERT encoders) on the same pipeline.

Public API (imported lazily so `import biogpt_train` stays cheap):
    load_pretrained(path)              any checkpoint of any family -> model in eval mode on CPU (fp32):
                                       fairseq checkpoint.pt, native .pt, HF BioGPT / Llama / ELECTRA / BERT directory
    load_tokenizer(path)               the family's tokenizer from a folder, file or checkpoint (dict.txt + bpecodes,
                                       vocab.json + merges.txt, tokenizer.model, vocab.txt)
    Tokenizer.from_files(dict, codes)  BioGPT's Moses + BPE tokenizer
    generation.generate(model, prefixes, beam=1, max_len_b=1024, min_len=1, ...)   decoding with a forced prefix
    loglikelihood(model, tokenizer, [(context, continuation), ...]) -> [(sum_logprob, is_greedy), ...]
"""

__version__ = "0.2.0"

__all__ = ["load_pretrained", "load_tokenizer", "loglikelihood", "Tokenizer", "Dictionary", "TransformerLM",
           "__version__"]

_LAZY = {  # explicit: name -> (module, attribute)
    "load_pretrained": ("biogpt_train.checkpoint.io", "load_pretrained"),
    "load_tokenizer": ("biogpt_train.data.tokenizers", "load_tokenizer"),
    "loglikelihood": ("biogpt_train.evaluation.loglikelihood", "loglikelihood"),
    "Tokenizer": ("biogpt_train.data.tokenizer", "Tokenizer"),
    "Dictionary": ("biogpt_train.data.dictionary", "Dictionary"),
    "TransformerLM": ("biogpt_train.models.biogpt", "TransformerLM"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'biogpt_train' has no attribute {name!r}")
