"""fairseq's `--optimizer adam` on torch.optim.AdamW.

fairseq's Adam is AdamW-style: decoupled weight decay `p -= lr * wd * p`, then the bias-corrected Adam step, on ALL
parameters (biases, LayerNorms and embeddings included) in one group, eps 1e-8 (framework-notes §2.9). That is
exactly `torch.optim.AdamW(model.parameters(), ...)`. `decay_all_params=false` gives nanoGPT's split instead
(decay only on >= 2-D weights), as an explicit, non-default recipe.
"""

from __future__ import annotations

from typing import Callable

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all_params: bool = True,
                 layerwise_lr_decay: float | None = None) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    if layerwise_lr_decay:
        return layerwise_groups(model, params, weight_decay, decay_all_params, layerwise_lr_decay)
    if decay_all_params:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_depths(model: torch.nn.Module) -> dict[int, int]:
    """id(parameter) -> depth as google-research/electra's `_get_layer_lrs`: embeddings (names with "embed") 0,
    block i of `model.blocks` i + 1, everything else (the task head) L + 2."""
    from biogpt_train.distributed.parallelize import unwrap

    plain = unwrap(model)
    blocks = getattr(plain, "blocks", None)
    if blocks is None:
        raise ValueError(f"optim.layerwise_lr_decay: {type(plain).__name__} has no `blocks` to take depths from")
    L = len(blocks)
    depth = {id(p): L + 2 for p in plain.parameters()}
    for name, p in plain.named_parameters():
        if any(part.startswith("embed") for part in name.split(".")[:-1]):
            depth[id(p)] = 0
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depth[id(p)] = i + 1
    return depth


def layerwise_groups(model, params, weight_decay: float, decay_all_params: bool, decay: float) -> list[dict]:
    """One group per (depth, decayed or not) with `lr_scale` = decay ** (L + 2 - depth); set_lr applies it."""
    depth = layer_depths(model)
    top = max(depth.values())
    groups: dict[tuple, dict] = {}
    for p in params:
        d = depth[id(p)]
        wd = weight_decay if decay_all_params or p.dim() >= 2 else 0.0
        g = groups.setdefault((d, wd), {"params": [], "weight_decay": wd, "lr_scale": decay ** (top - d)})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_adam(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    impl = str(cfg.impl)
    if impl == "auto":
        impl = "fused" if device.type == "cuda" else "foreach"
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.decay_all_params, getattr(cfg, "layerwise_lr_decay", None)),
        lr=cfg.lr,  # replaced before every step by the scheduler's value
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        **kwargs,
    )


# name -> builder(model, optim_cfg, device); add an entry (and an OptimizerName member) for a new optimizer
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": build_adam}


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    name = str(cfg.name)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, cfg, device)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # lr_scale: layer-wise decay groups
