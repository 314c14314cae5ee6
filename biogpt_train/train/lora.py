"""LoRA adapters (`model.lora: {rank, alpha, dropout, target_modules}`, rank 0 = off) on a plain model, with `peft`.

`apply_lora(model, cfg)` injects peft's LoRA layers in place (`inject_adapter_in_model`: each targeted
`nn.Linear` becomes a `lora.Linear` holding it as `base_layer`) and leaves only the adapter weights trainable. The
trainer calls it after building/loading the weights and before activation checkpointing, compile and FSDP/DDP, so
those wrap the adapted model and the optimizer sees the adapters only.

Checkpoints stay plain state dicts of the family: `merged_state_dict` folds every adapter into its base weight,
`W + scaling * B @ A` (peft's `get_delta_weight`, scaling = alpha / rank), on the full state dict, so it works on
FSDP-gathered tensors too. A training checkpoint keeps the adapters themselves aside (`train_state["lora"]`); on
resume `apply_lora(..., adapters=...)` loads them and subtracts their delta from the merged weights it was given,
which recovers the base weights up to one rounding of the fp32 addition. `merge_and_unload(model)` does the
in-memory equivalent (peft's layer `merge`, then the base layer replaces the wrapper): a plain model again.
"""

from __future__ import annotations

import sys
from typing import Mapping, Optional

import torch
import torch.nn as nn

ADAPTER = "default"  # peft's adapter name: parameter names are `<module>.lora_A.default.weight` etc.


def _lora_layers(model: nn.Module) -> dict:
    if "peft" not in sys.modules:  # nothing was injected (and importing peft costs seconds)
        return {}
    from peft.tuners.lora import LoraLayer

    from biogpt_train.distributed.parallelize import unwrap

    return {name: m for name, m in unwrap(model).named_modules() if isinstance(m, LoraLayer)}


def peft_config(cfg: Mapping):
    """A peft LoraConfig from `model.lora` (rank, alpha, dropout, target_modules)."""
    from peft import LoraConfig

    targets = list(cfg["target_modules"])
    if not targets:
        raise ValueError(f"model.lora needs rank >= 1 and target_modules (e.g. [q_proj, v_proj]); got {dict(cfg)}")
    return LoraConfig(r=int(cfg["rank"]), lora_alpha=float(cfg["alpha"]), lora_dropout=float(cfg["dropout"]),
                      target_modules=targets, bias="none")


def enabled(cfg: Optional[Mapping]) -> bool:
    return cfg is not None and int(cfg["rank"]) > 0


def apply_lora(model: nn.Module, cfg: Optional[Mapping], adapters: Optional[Mapping] = None) -> nn.Module:
    """Inject LoRA adapters (nothing when `cfg` is None); only they stay trainable. `adapters`: the tensors a
    training checkpoint kept (resume), loaded into the new layers and taken out of the merged base weights."""
    if not enabled(cfg):
        return model
    from peft import inject_adapter_in_model

    model = inject_adapter_in_model(peft_config(cfg), model, adapter_name=ADAPTER)
    if not _lora_layers(model):
        raise ValueError(f"model.lora.target_modules={list(cfg['target_modules'])} matched no module of "
                         f"{type(model).__name__} (Llama: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)")
    if adapters:
        params = dict(model.named_parameters())
        missing = sorted(set(adapters) - set(params))
        if missing:
            raise ValueError(f"the checkpoint's LoRA adapters do not fit model.lora: unknown {missing[:4]}")
        with torch.no_grad():
            for name, value in adapters.items():
                params[name].copy_(value)
            for layer in _lora_layers(model).values():  # the loaded weights were merged: W = W' - delta
                base = layer.get_base_layer().weight
                base -= layer.get_delta_weight(ADAPTER).to(base.dtype)
    return model


def merged_state_dict(model: nn.Module, sd: Mapping) -> tuple[dict, dict]:
    """(plain state dict with every adapter folded into its base weight, the adapter tensors) from the full state
    dict `sd` of `model`; (sd, {}) for a model without adapters."""
    layers = _lora_layers(model)
    sd = dict(sd)
    if not layers:
        return sd, {}
    adapters = {k: v for k, v in sd.items() if ".lora_" in k}
    merged = {}  # base weight key -> W + scaling * B @ A (peft's get_delta_weight)
    for name, layer in layers.items():
        a, b = sd[f"{name}.lora_A.{ADAPTER}.weight"], sd[f"{name}.lora_B.{ADAPTER}.weight"]
        w = sd[f"{name}.base_layer.weight"]
        merged[f"{name}.base_layer.weight"] = w + ((b.float() @ a.float()) * layer.scaling[ADAPTER]).to(w.dtype)
    # same keys and order as the plain model: `x.base_layer.weight` -> `x.weight`, adapters dropped
    sd = {k.replace(".base_layer.", "."): merged.get(k, v) for k, v in sd.items() if ".lora_" not in k}
    if len(adapters) != 2 * len(layers):
        raise ValueError(f"{len(adapters)} LoRA tensors for {len(layers)} layers: only one adapter ({ADAPTER!r}, "
                         "no bias) is supported")
    return sd, adapters


@torch.no_grad()
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter into its base layer and put the base layer back: the plain model (in place)."""
    from biogpt_train.distributed.parallelize import unwrap

    root = unwrap(model)
    for name, layer in _lora_layers(root).items():
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, layer.get_base_layer())
    for p in root.parameters():
        p.requires_grad_(True)
    return model
