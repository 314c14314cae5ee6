"""fairseq's `--optimizer adam` on torch.optim.AdamW.

fairseq's Adam is AdamW-style: decoupled weight decay `p -= lr * wd * p`, then the bias-corrected Adam step, on ALL
parameters (biases, LayerNorms and embeddings included) in one group, eps 1e-8 (framework-notes §2.9). That is
exactly `torch.optim.AdamW(model.parameters(), ...)`. `decay_all_params=false` gives nanoGPT's split instead
(decay only on >= 2-D weights), as an explicit, non-default recipe.
"""

from __future__ import annotations

from typing import Callable

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all_params: bool = True) -> list[dict]:
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_all_params:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_adam(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    impl = str(cfg.impl)
    if impl == "auto":  # fused: one kernel over all tensors (CPU too since torch 2.4; ~10x foreach there)
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    kwargs = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.decay_all_params),
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
        group["lr"] = lr
