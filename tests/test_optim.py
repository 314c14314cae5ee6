"""FairseqAdam against a literal port of fairseq v0.12's `Adam.step` (fairseq/optim/adam.py, the per-parameter
loop): identical parameters after several steps, including the first ones where the eps placement matters; torch's
AdamW differs there; fp16 parameters keep fp32 state; the state survives a state_dict round trip."""

from __future__ import annotations

import math

import pytest
import torch

from biogpt_train.train.optim import FairseqAdam, FusedFairseqAdam

BETAS, EPS, WD = (0.9, 0.98), 1e-8, 0.01


def fairseq_adam_step(params, grads, states, lr, betas=BETAS, eps=EPS, weight_decay=WD):
    """fairseq v0.12 Adam.step for one group, per parameter, as written there (the reference)."""
    for p, grad, state in zip(params, grads, states):
        p_data_fp32 = p.data
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p_data_fp32)
            state["exp_avg_sq"] = torch.zeros_like(p_data_fp32)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        beta1, beta2 = betas
        state["step"] += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(eps)
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2 = 1 - beta2 ** state["step"]
        step_size = lr * math.sqrt(bias_correction2) / bias_correction1
        if weight_decay != 0:
            p_data_fp32.add_(p_data_fp32, alpha=-weight_decay * lr)
        p_data_fp32.addcdiv_(exp_avg, denom, value=-step_size)


def _params_and_grads(seed=0, steps=6):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,)]
    params = [torch.randn(s, generator=g) for s in shapes]
    # tiny gradients: where sqrt(v) is near eps, the eps placement changes the update
    grads = [[torch.randn(s, generator=g) * 10.0 ** -(4 + i % 4) for i, s in enumerate(shapes)] for _ in range(steps)]
    return params, grads


def _run_ours(params0, grads, lrs, opt_cls=FairseqAdam, **kw):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = opt_cls([{"params": params, "weight_decay": WD}], lr=lrs[0], betas=BETAS, eps=EPS, **kw)
    for step_grads, lr in zip(grads, lrs):
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return params, opt


@pytest.mark.parametrize("opt_cls,kernel", [(FairseqAdam, {}), (FusedFairseqAdam, {"fused": True}),
                                             (FusedFairseqAdam, {"foreach": True})])
def test_matches_a_literal_port_of_fairseq_adam(opt_cls, kernel):
    params0, grads = _params_and_grads()
    lrs = [1e-7 + k * 1e-3 for k in range(len(grads))]  # warmup-like LRs
    ref = [p.clone() for p in params0]
    states = [{} for _ in ref]
    for step_grads, lr in zip(grads, lrs):
        fairseq_adam_step(ref, step_grads, states, lr)
    ours, opt = _run_ours(params0, grads, lrs, opt_cls, **kernel)
    # the literal loop: to 1e-7; torch's fused/foreach kernels round in another order: within 2 float32 ulps
    tol = {"rtol": 2.4e-7, "atol": 1e-9} if kernel else {"rtol": 0, "atol": 1e-7}
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.detach(), b, **tol)
    for p, st in zip(ours, states):
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=1e-12 if kernel else 0)
        assert int(opt.state[p]["step"]) == st["step"] == len(grads)
    # torch's AdamW places eps after the bias correction: a visibly different first updates
    torch_params, _ = _run_ours(params0, grads, lrs, torch.optim.AdamW, foreach=True)
    diff = max((a - b).abs().max().item() for a, b in zip(torch_params, ref))
    assert diff > 1e-6


@pytest.mark.parametrize("opt_cls,kernel", [(FairseqAdam, {}), (FusedFairseqAdam, {"fused": True})])
def test_state_dict_round_trip_continues_identically(opt_cls, kernel):
    params0, grads = _params_and_grads(seed=1)
    lrs = [1e-3] * len(grads)
    full, _ = _run_ours(params0, grads, lrs, opt_cls, **kernel)
    half, opt = _run_ours(params0, grads[:3], lrs[:3], opt_cls, **kernel)
    sd = opt.state_dict()
    params = [torch.nn.Parameter(p.detach().clone()) for p in half]
    opt2 = opt_cls([{"params": params, "weight_decay": WD}], lr=1e-3, betas=BETAS, eps=EPS, **kernel)
    opt2.load_state_dict(sd)
    for step_grads in grads[3:]:
        for p, gr in zip(params, step_grads):
            p.grad = gr.clone()
        opt2.step()
    for a, b in zip(params, full):
        assert torch.equal(a, b)


@pytest.mark.parametrize("master", [True, False])
def test_half_parameters_keep_fp32_state(master):
    """fp16 weights: fp32 moments; master=True also an fp32 copy whose rounding is the weight (fairseq --fp16),
    master=False recomputes from the half weight (--memory-efficient-fp16); both survive a state_dict round trip."""
    params0, grads = _params_and_grads(seed=2, steps=4)
    params = [torch.nn.Parameter(p.half()) for p in params0]
    opt = FairseqAdam([{"params": params, "weight_decay": WD}], lr=1e-2, betas=BETAS, eps=EPS, master_weights=master)
    for step_grads in grads:
        for p, gr in zip(params, step_grads):
            p.grad = gr.half()
        opt.step()
    for p in params:
        st = opt.state[p]
        assert p.dtype == torch.float16 and st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.float32
        assert ("master" in st) == master
        if master:
            assert st["master"].dtype == torch.float32 and torch.equal(st["master"].half(), p.detach())
    sd = opt.state_dict()
    opt2 = FairseqAdam([{"params": params, "weight_decay": WD}], lr=1e-2, betas=BETAS, eps=EPS,
                       master_weights=master)
    opt2.load_state_dict(sd)
    for p in params:
        for k, v in opt.state[p].items():
            assert v.dtype == opt2.state[p][k].dtype and torch.equal(v, opt2.state[p][k]), k
