"""fairseq's `--optimizer adam`, and torch.optim.AdamW as the alternative.

fairseq's Adam (``fairseq/optim/adam.py``) is AdamW-style: decoupled weight decay ``p -= lr * wd * p`` on ALL
parameters (biases, LayerNorms and embeddings included) in one group, eps 1e-8 (framework-notes §2.9). It differs
from torch's AdamW in where eps goes: fairseq adds it to ``sqrt(v)`` BEFORE the bias correction,

    denom = sqrt(v) + eps;   p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / denom

while torch computes ``m_hat / (sqrt(v_hat) + eps)``, i.e. an effective eps of ``eps * sqrt(1 - b2^t)``, 14x
smaller at update 1 with b2 = 0.98. `FairseqAdam` reproduces fairseq's step (``optim.eps_mode=fairseq``, the
default); ``optim.eps_mode=torch`` gives torch.optim.AdamW (kernel chosen by ``optim.impl``).
``decay_all_params=false`` gives nanoGPT's split instead (decay only on >= 2-D weights), a non-default recipe.

fp16 parameters (``trainer.fp16_weights``): the moments are fp32 and the update is computed in fp32, as fairseq's
Adam does for half parameters. With ``master_weights`` the optimizer also keeps an fp32 copy of each half
parameter and the half weights are its rounding (fairseq ``--fp16``); without, the fp32 update starts from the half
weights every step (fairseq ``--memory-efficient-fp16``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


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


class FairseqAdam(torch.optim.Optimizer):
    """fairseq v0.12 `Adam.step`, with torch's foreach kernels (plain tensors and FSDP's DTensors alike).

    State per parameter: ``step`` (0-d fp32 CPU tensor, as torch's Adam), ``exp_avg``, ``exp_avg_sq`` (fp32) and,
    for half parameters with ``master_weights``, ``master`` (fp32)."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 master_weights: bool = False):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, master_weights=master_weights)
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
            if group["master_weights"] and p.dtype in LOW_PRECISION:
                state["master"] = p.detach().float()
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("FairseqAdam does not support sparse gradients")
            states = [self._init_state(p, group) for p in params]
            # the fp32 tensors the update is applied to: the parameter itself, its master copy, or a fresh upcast
            weights = [s["master"] if "master" in s else p if p.dtype == torch.float32 else p.detach().float()
                       for p, s in zip(params, states)]
            grads = [p.grad if p.grad.dtype == torch.float32 else p.grad.float() for p in params]
            exp_avg = [s["exp_avg"] for s in states]
            exp_avg_sq = [s["exp_avg_sq"] for s in states]
            for s in states:
                s["step"] += 1
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]

            torch._foreach_mul_(exp_avg, beta1)
            torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, group["eps"])  # eps before the bias correction: fairseq's placement
            steps = [int(s["step"].item()) for s in states]  # CPU scalars: no device sync
            step_sizes = [-lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) for t in steps]
            if wd != 0:
                torch._foreach_add_(weights, weights, alpha=-wd * lr)  # fairseq: p.add_(p, alpha=-wd * lr)
            torch._foreach_addcdiv_(weights, exp_avg, denom, step_sizes)
            low = [(p, w) for p, w in zip(params, weights) if p.dtype != torch.float32]
            if low:
                torch._foreach_copy_([p for p, _ in low], [w for _, w in low])
        return loss

    def load_state_dict(self, state_dict: dict) -> None:
        """torch casts every floating state tensor to its parameter's dtype on load; half parameters keep their
        fp32 moments (and master copy) here, so a resumed fp16 run continues exactly."""
        keep = {pid: {k: v for k, v in st.items() if k != "step" and torch.is_tensor(v)}
                for pid, st in state_dict["state"].items()}
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params):
            if pid in keep and p.dtype != torch.float32:
                for k, v in keep[pid].items():
                    self.state[p][k] = v.to(device=p.device, dtype=torch.float32, copy=True)


class FusedFairseqAdam(torch.optim.AdamW):
    """fairseq's Adam step on torch's fused (or foreach) AdamW kernel: with eps_t = eps / sqrt(1 - b2^t), torch's
    ``m_hat / (sqrt(v_hat) + eps_t)`` is fairseq's ``sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` in exact
    arithmetic (the kernels round differently: within 1e-7 of a literal port, tests/test_optim.py), and AdamW's
    ``p *= 1 - lr * wd`` is fairseq's decoupled decay. The step count t is the optimizer's (every parameter gets a
    gradient every update in our trainer, as in fairseq). For fp32 parameters; half ones use FairseqAdam."""

    def __init__(self, params, lr: float, betas, eps: float, **kernel):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, **kernel)
        for group in self.param_groups:
            group.setdefault("fairseq_eps", eps)
        self._t = 0

    @torch.no_grad()
    def step(self, closure=None):
        self._t += 1
        for group in self.param_groups:
            group["eps"] = group["fairseq_eps"] / math.sqrt(1 - group["betas"][1] ** self._t)
        return super().step(closure)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        steps = [float(st["step"]) for st in self.state.values() if "step" in st]  # once, at resume
        self._t = int(max(steps)) if steps else 0


def _kernel(impl: str, device: torch.device) -> dict:
    if impl == "auto":  # fused: one kernel over all tensors (CPU too since torch 2.4; ~10x foreach there)
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    return {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}


def build_adam(model: torch.nn.Module, cfg, device: torch.device, master_weights: bool = False
               ) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_all_params, getattr(cfg, "layerwise_lr_decay", None))
    mode = str(getattr(cfg, "eps_mode", "fairseq"))
    half = any(p.dtype != torch.float32 for g in groups for p in g["params"])
    if mode == "fairseq" and (half or str(cfg.impl) == "for_loop"):
        return FairseqAdam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, master_weights=master_weights)
    if mode == "fairseq":
        return FusedFairseqAdam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **_kernel(str(cfg.impl), device))
    if mode != "torch":
        raise ValueError(f"optim.eps_mode must be fairseq or torch, not {mode!r}")
    if half:
        raise ValueError("optim.eps_mode=torch keeps the optimizer state in the parameters' dtype; with "
                         "trainer.fp16_weights use optim.eps_mode=fairseq (fp32 moments, as fairseq)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,  # lr: set before every step
                             **_kernel(str(cfg.impl), device))


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


# name -> builder(model, optim_cfg, device, master_weights); add an entry (and an OptimizerName member) for more
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": build_adam}


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device, master_weights: bool = False
                    ) -> torch.optim.Optimizer:
    name = str(cfg.name)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, cfg, device, master_weights)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # lr_scale: layer-wise decay groups
