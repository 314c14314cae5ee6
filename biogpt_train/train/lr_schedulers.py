"""Learning-rate schedules as pure functions ``lr(num_updates, cfg, epoch=1) -> float`` (fairseq v0.12 formulas).

``num_updates`` is the number of *completed* updates: fairseq calls ``step_update(n)`` after every successful update
(and at epoch start), so update ``n + 1`` runs with ``lr(n)`` and the first update runs with ``lr(0)``
(framework-notes §2.5). ``cfg`` is a mapping or an object with attributes (dataclass, OmegaConf); missing keys take
fairseq's defaults. ``cfg.lr`` may be a float or fairseq's list (``lr[0]`` is used).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

_MISSING = object()


def _get(cfg: Any, key: str, default: Any = _MISSING) -> Any:
    value = cfg.get(key, _MISSING) if isinstance(cfg, Mapping) else getattr(cfg, key, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise KeyError(f"lr scheduler config needs {key!r}")
        return default
    return value


def _lrs(cfg: Any) -> list[float]:
    lr = _get(cfg, "lr")
    lrs = [float(x) for x in lr] if hasattr(lr, "__iter__") and not isinstance(lr, str) else [float(lr)]
    if not lrs:
        raise ValueError("lr scheduler config: lr is an empty list")
    return lrs


def _single_lr(cfg: Any, name: str) -> float:
    lrs = _lrs(cfg)
    if len(lrs) > 1:
        raise ValueError(f"{name}: lr must be a single value, got {lrs}; use lr_scheduler=fixed for per-epoch lrs")
    return lrs[0]


def _total_updates(cfg: Any) -> float:
    """``total_num_update`` if > 0, else ``max_update`` (fairseq's default), else 0."""
    for key in ("total_num_update", "max_update"):
        value = _get(cfg, key, None)
        if value is not None and float(value) > 0:
            return float(value)
    return 0.0


def inverse_sqrt(num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """Linear warmup from ``warmup_init_lr`` to ``lr`` over ``warmup_updates``, then ``lr * sqrt(warmup / n)``.

    ``warmup_init_lr`` < 0 (default -1) means 0. ``warmup_updates`` (default 4000) must be >= 1: fairseq divides
    by it (and would compute 0 * 0**-0.5 at n=0), so 0 is rejected here instead of crashing later.
    """
    peak = _single_lr(cfg, "inverse_sqrt")
    warmup = int(_get(cfg, "warmup_updates", 4000))
    if warmup < 1:
        raise ValueError(f"inverse_sqrt needs warmup_updates >= 1, got {warmup} (fairseq divides by it)")
    init = float(_get(cfg, "warmup_init_lr", -1))
    if init < 0:
        init = 0.0
    if num_updates < warmup:
        return init + num_updates * (peak - init) / warmup
    return peak * warmup**0.5 * num_updates**-0.5


def polynomial_decay(num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """Optional zero-LR steps, linear warmup (``n = 0`` gives 0 when warmup > 0), then polynomial decay to
    ``end_learning_rate`` at ``total_num_update`` (defaults to ``max_update``)."""
    peak = _lrs(cfg)[0]
    warmup = int(_get(cfg, "warmup_updates", 0))
    zero = int(_get(cfg, "zero_lr_warmup_steps", 0))
    end_lr = float(_get(cfg, "end_learning_rate", 0.0))
    power = float(_get(cfg, "power", 1.0))
    total = _total_updates(cfg)
    if total <= 0:
        raise ValueError("polynomial_decay needs total_num_update (or max_update) > 0")
    if zero > 0 and num_updates <= zero:
        return 0.0
    if warmup > 0 and num_updates <= warmup + zero:
        return (num_updates - zero) / float(warmup) * peak
    if num_updates >= total:
        return end_lr
    start = warmup + zero
    remaining = 1 - (num_updates - start) / (total - start)
    return (peak - end_lr) * remaining**power + end_lr


def cosine(num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """fairseq ``cosine``: linear warmup from ``warmup_init_lr`` (default ``min_lr``) to ``lr``, then cosine
    cycles between ``lr`` and ``min_lr``; period ``lr_period_updates`` (default: ``total_num_update`` or
    ``max_update``, minus warmup, as fairseq's ``max_update - warmup``) grows by ``t_mult`` (default 1) per cycle
    and both bounds shrink by ``lr_shrink`` (default 0.1) per cycle."""
    max_lr = _single_lr(cfg, "cosine")
    min_lr = float(_get(cfg, "min_lr", 0.0))
    if not max_lr > min_lr:
        raise ValueError(f"cosine: lr (={max_lr}) must be more than min_lr (={min_lr})")
    warmup = int(_get(cfg, "warmup_updates", 0))
    init = float(_get(cfg, "warmup_init_lr", -1))
    if init < 0:
        init = min_lr
    t_mult = float(_get(cfg, "t_mult", 1.0))
    shrink = float(_get(cfg, "lr_shrink", 0.1))
    period = float(_get(cfg, "lr_period_updates", -1))
    if period <= 0:
        total = _total_updates(cfg)
        if total <= 0:
            raise ValueError("cosine: set lr_period_updates, total_num_update or max_update")
        period = total - warmup
        if period <= 0:
            raise ValueError(f"cosine: total updates ({total:g}) must exceed warmup_updates ({warmup})")
    if num_updates < warmup:
        return init + num_updates * (max_lr - init) / warmup
    cur = num_updates - warmup
    if t_mult != 1:
        i = math.floor(math.log(1 - cur / period * (1 - t_mult), t_mult))
        t_i = t_mult**i * period
        t_cur = cur - (1 - t_mult**i) / (1 - t_mult) * period
    else:
        i = math.floor(cur / period)
        t_i = period
        t_cur = cur - period * i
    lo, hi = min_lr * shrink**i, max_lr * shrink**i
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * t_cur / t_i))


def fixed(num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """``lr[epoch - 1]`` (last value reused), annealed by ``lr_shrink`` from epoch ``force_anneal`` on, with an
    optional linear warmup factor ``(n + 1) / warmup_updates`` for ``n < warmup_updates``."""
    lrs = _lrs(cfg)
    force_anneal = _get(cfg, "force_anneal", None)
    shrink = float(_get(cfg, "lr_shrink", 0.1))
    warmup = int(_get(cfg, "warmup_updates", 0))
    if force_anneal is None or epoch < int(force_anneal):
        base = lrs[min(epoch - 1, len(lrs) - 1)]
    else:
        base = lrs[-1] * shrink ** (epoch + 1 - int(force_anneal))
    if warmup > 0 and num_updates < warmup:
        return (num_updates + 1) / float(warmup) * base
    return base


def linear(num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """google-research/electra's ``optimization.create_optimizer`` (BioM-ELECTRA's TF recipe): the LR decays
    linearly from ``lr`` at update 0 to ``end_learning_rate`` at ``total_num_update`` (default ``max_update``;
    ``power`` != 1 gives polynomial decay) and is multiplied by ``min(1, n / warmup)``; warmup =
    ``int(warmup_ratio * total)`` when ``warmup_ratio`` > 0 (ELECTRA's warmup_proportion 0.1), else
    ``warmup_updates``. So update 1 runs with LR 0, and the end of warmup is at ``(1 - ratio) * lr``, not ``lr``
    (transformers' get_linear_schedule_with_warmup peaks at ``lr``: that is ``polynomial_decay`` with power 1)."""
    peak = _single_lr(cfg, "linear")
    total = _total_updates(cfg)
    if total <= 0:
        raise ValueError("linear needs total_num_update or max_update > 0 (the trainer derives it from "
                         "max_epoch for epoch-limited runs)")
    ratio = float(_get(cfg, "warmup_ratio", 0.0))
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"linear: warmup_ratio must be in [0, 1), got {ratio}")
    warmup = int(ratio * total) if ratio > 0 else int(_get(cfg, "warmup_updates", 0))
    end_lr = float(_get(cfg, "end_learning_rate", 0.0))
    power = float(_get(cfg, "power", 1.0))
    lr = (peak - end_lr) * (1.0 - min(num_updates, total) / total) ** power + end_lr
    if warmup > 0:
        lr *= min(1.0, num_updates / warmup)
    return lr


SCHEDULERS: dict[str, Callable[..., float]] = {
    "linear": linear,
    "inverse_sqrt": inverse_sqrt,
    "polynomial_decay": polynomial_decay,
    "cosine": cosine,
    "fixed": fixed,
}


def get_lr(name: str, num_updates: int, cfg: Any, epoch: int = 1) -> float:
    """``SCHEDULERS[name](num_updates, cfg, epoch)`` with a clear error for an unknown name."""
    try:
        fn = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown lr_scheduler {name!r}; expected one of {sorted(SCHEDULERS)}") from None
    return fn(num_updates, cfg, epoch)


def _to_dict(cfg: Any) -> dict:
    if isinstance(cfg, Mapping):
        return {str(k): cfg[k] for k in cfg}
    if hasattr(cfg, "__dataclass_fields__"):
        return {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    return dict(vars(cfg))


def build_lr_fn(cfg: Any, *, lr: Any = None, max_update: int | None = None) -> Callable[..., float]:
    """``f(num_updates, epoch=1) -> lr`` for the scheduler named ``cfg.name`` (str or Enum).

    ``lr`` (``optim.lr``) and ``max_update`` (``trainer.max_update``) are merged into the scheduler config, which
    does not hold them itself. The config is validated now (``f(0)`` is evaluated), so errors surface at startup.
    """
    merged = _to_dict(cfg)
    if lr is not None:
        merged["lr"] = lr
    if max_update is not None:
        merged["max_update"] = max_update
    name = merged.pop("name", None)
    name = getattr(name, "value", name)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler {name!r}; expected one of {sorted(SCHEDULERS)}")
    fn = SCHEDULERS[name]

    def lr_fn(num_updates: int, epoch: int = 1) -> float:
        return fn(num_updates, merged, epoch)

    lr_fn(0)
    return lr_fn
