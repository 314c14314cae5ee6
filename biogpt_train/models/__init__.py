"""Model families: one model file each (read it top to bottom), and the table below that says what a family is
made of. Everything that differs between families is looked up here, nowhere else:

    family        model file          config dataclass   tokenizer        HF model_type(s)   sequence start
    biogpt        models/biogpt.py    ModelConfig        bpe (Moses+BPE)  biogpt             </s> (id 2)
    llama         models/llama.py     LlamaConfig        sentencepiece    llama              <s>  (id 1)
    electra       models/electra.py   EncoderConfig      wordpiece        electra, bert      [CLS]

An encoder has several heads (`model.head`: qa | rtd | mlm | cls); BioM-ELECTRA's QA model is the default.

Hydra's `model` group (conf/model/<name>.yaml, the one home of named shapes) uses the same key names for every
family (`embed_dim`, `layers`, `heads`, `ffn_dim`, `max_positions`, ...); `model_config(cfg.model, vocab_size)`
turns it into the family's dataclass, keeping only the keys that family has and refusing any it does not use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch.nn as nn

from biogpt_train.models import biogpt, electra, llama
from biogpt_train.models.electra_pretraining import ElectraPretraining, build_electra


@dataclass(frozen=True)
class Family:
    config: type  # the config dataclass of the model file
    build: Callable[..., nn.Module]  # (config, **head options) -> plain model, initialised as the original
    classes: tuple  # the model classes of the family (heads included)
    tokenizer: str  # "bpe" (dict.txt + bpecodes) | "sentencepiece" (tokenizer.model) | "wordpiece" (vocab.txt)
    hf_model_types: tuple  # config.json "model_type" values this family reads
    causal: bool = True  # decoder (next-token LM) or encoder
    # forward options that say a batch is right-padded (every training batch): BioGPT then skips its pad mask
    right_padded: Mapping = dataclasses.field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "biogpt": Family(biogpt.ModelConfig, biogpt.TransformerLM, (biogpt.TransformerLM,), "bpe", ("biogpt",),
                     right_padded={"pad_mask": False}),
    "llama": Family(llama.LlamaConfig, llama.Llama, (llama.Llama,), "sentencepiece", ("llama",)),
    "electra": Family(electra.EncoderConfig, build_electra,
                      (electra.QAModel, electra.ElectraDiscriminator, electra.ElectraGenerator,
                       electra.SequenceClassifier, ElectraPretraining), "wordpiece", ("electra", "bert"),
                      causal=False),
}
# model-group keys that name or configure around the network rather than shape it
NOT_SHAPE = ("family", "arch", "head", "num_labels", "generator_size", "generator_layers", "lora")


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(model: nn.Module) -> str:
    """The family name of a (plain or wrapped) model."""
    from biogpt_train.distributed.parallelize import unwrap

    model = unwrap(model)
    for name, fam in FAMILIES.items():
        if isinstance(model, fam.classes):
            return name
    raise ValueError(f"{type(model).__name__} is not a model of any family ({', '.join(FAMILIES)})")


def model_config(model_cfg: Mapping, vocab_size: Optional[int] = None, **overrides):
    """The family's config dataclass from a `model` node (Hydra config or a conf/model YAML mapping).

    Keys left null are the family's defaults; a key set but unknown to the family is an error (a Llama key on a
    BioGPT model would otherwise be ignored). `vocab_size` (the tokenizer's) wins over the node's."""
    values = {k: v for k, v in dict(model_cfg).items() if v is not None and k not in NOT_SHAPE}
    family = get_family(str(dict(model_cfg).get("family") or "biogpt"))
    known = {f.name for f in dataclasses.fields(family.config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"model keys {unknown} do not apply to the {model_cfg.get('family') or 'biogpt'} family "
                         f"(its keys: {', '.join(sorted(known - {'vocab_size'}))})")
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    values.update(overrides)
    if "vocab_size" not in values:
        raise ValueError("the model config has no vocab_size: pass the tokenizer's size")
    return family.config(**values)


def build_model(family: str, config, **head) -> nn.Module:
    """A fresh model; `head` options go to encoders (head="qa"|"rtd"|"mlm"|"cls", num_labels=N)."""
    return get_family(family).build(config, **head)


__all__ = ["FAMILIES", "Family", "get_family", "family_of", "model_config", "build_model"]
