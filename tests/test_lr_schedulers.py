"""LR schedules against hand-computed tables (fairseq v0.12 formulas; n = completed updates)."""

import math
from types import SimpleNamespace

import pytest

from biogpt_train.train.lr_schedulers import SCHEDULERS, cosine, fixed, get_lr, inverse_sqrt, polynomial_decay

BIOGPT = {"lr": [1e-4], "warmup_updates": 500, "warmup_init_lr": 1e-7}


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, 1e-7),                              # the first update runs at warmup_init_lr
        (1, 1e-7 + (1e-4 - 1e-7) / 500),        # 2.998e-7
        (250, 1e-7 + 250 * (1e-4 - 1e-7) / 500),  # 5.005e-5
        (500, 1e-4),                            # peak: 1e-4 * sqrt(500) / sqrt(500)
        (501, 1e-4 * math.sqrt(500 / 501)),     # 9.99001e-5
        (2000, 5e-5),                           # 1e-4 * sqrt(500 / 2000)
    ],
)
def test_inverse_sqrt_biogpt_table(n, expected):
    assert inverse_sqrt(n, BIOGPT) == pytest.approx(expected, rel=1e-12)


def test_inverse_sqrt_hand_values_and_defaults():
    assert inverse_sqrt(1, BIOGPT) == pytest.approx(2.998e-7, rel=1e-12)
    assert inverse_sqrt(250, BIOGPT) == pytest.approx(5.005e-5, rel=1e-12)
    cfg = {"lr": 1e-3, "warmup_updates": 4}  # warmup_init_lr default -1 -> 0
    assert [inverse_sqrt(n, cfg) for n in range(5)] == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert inverse_sqrt(16, cfg) == pytest.approx(5e-4)
    # attribute-style config (dataclass / OmegaConf) and fairseq's default warmup of 4000
    assert inverse_sqrt(16000, SimpleNamespace(lr=[2e-4], warmup_updates=4000, warmup_init_lr=-1)) == pytest.approx(1e-4)
    assert inverse_sqrt(2000, {"lr": 1e-3}) == pytest.approx(5e-4)


def test_inverse_sqrt_rejects_zero_warmup_and_lr_lists():
    with pytest.raises(ValueError, match="warmup_updates >= 1"):
        inverse_sqrt(0, {"lr": 1e-3, "warmup_updates": 0})
    with pytest.raises(ValueError, match="single value"):
        inverse_sqrt(0, {"lr": [1e-3, 1e-4], "warmup_updates": 10})


def test_polynomial_decay():
    cfg = {"lr": [1e-3], "warmup_updates": 10, "total_num_update": 110}
    assert polynomial_decay(0, cfg) == 0.0  # n=0 gives 0 when warmup > 0
    assert polynomial_decay(5, cfg) == pytest.approx(5e-4)
    assert polynomial_decay(10, cfg) == pytest.approx(1e-3)
    assert polynomial_decay(60, cfg) == pytest.approx(5e-4)
    assert polynomial_decay(110, cfg) == 0.0
    assert polynomial_decay(500, {**cfg, "end_learning_rate": 1e-5}) == 1e-5
    assert polynomial_decay(60, {**cfg, "end_learning_rate": 1e-4}) == pytest.approx(5.5e-4)
    assert polynomial_decay(60, {**cfg, "power": 2.0}) == pytest.approx(2.5e-4)
    assert polynomial_decay(0, {"lr": 1e-3, "total_num_update": 100}) == pytest.approx(1e-3)  # no warmup
    assert polynomial_decay(50, {"lr": 1e-3, "max_update": 100}) == pytest.approx(5e-4)  # total from max_update
    zero = {**cfg, "zero_lr_warmup_steps": 5}
    assert [polynomial_decay(n, zero) for n in (0, 5, 10, 15)] == pytest.approx([0, 0, 5e-4, 1e-3])
    with pytest.raises(ValueError, match="total_num_update"):
        polynomial_decay(1, {"lr": 1e-3})


def test_cosine():
    cfg = {"lr": 1.0, "min_lr": 0.0, "lr_period_updates": 100, "lr_shrink": 1.0}
    assert cosine(0, cfg) == pytest.approx(1.0)
    assert cosine(50, cfg) == pytest.approx(0.5)
    assert cosine(25, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine(100, cfg) == pytest.approx(1.0)  # restart
    assert cosine(100, {**cfg, "lr_shrink": 0.1}) == pytest.approx(0.1)  # 2nd cycle shrunk
    # warmup from min_lr (default warmup_init_lr), period from max_update - warmup
    w = {"lr": [1.0], "min_lr": 0.2, "warmup_updates": 10, "max_update": 110}
    assert cosine(0, w) == pytest.approx(0.2)
    assert cosine(5, w) == pytest.approx(0.6)
    assert cosine(60, w) == pytest.approx(0.6)  # half-way: (0.2 + 1.0) / 2
    # t_mult = 2: periods 10, 20, 40, ...
    t = {"lr": 1.0, "min_lr": 0.0, "lr_period_updates": 10, "t_mult": 2.0, "lr_shrink": 1.0}
    assert cosine(5, t) == pytest.approx(0.5)
    assert cosine(20, t) == pytest.approx(0.5)  # 10 into the 20-update second period
    with pytest.raises(ValueError, match="more than min_lr"):
        cosine(0, {"lr": 0.1, "min_lr": 0.2, "max_update": 10})
    with pytest.raises(ValueError, match="lr_period_updates, total_num_update or max_update"):
        cosine(0, {"lr": 0.1})


def test_fixed():
    cfg = {"lr": [0.1, 0.05]}
    assert fixed(0, cfg, epoch=1) == 0.1
    assert fixed(99, cfg, epoch=2) == 0.05
    assert fixed(99, cfg, epoch=5) == 0.05
    assert fixed(0, {**cfg, "force_anneal": 3}, epoch=3) == pytest.approx(0.005)
    warm = {"lr": 0.1, "warmup_updates": 4}
    assert [fixed(n, warm) for n in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_registry():
    assert set(SCHEDULERS) == {"inverse_sqrt", "polynomial_decay", "cosine", "fixed", "linear"}
    assert get_lr("inverse_sqrt", 500, BIOGPT) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown lr_scheduler"):
        get_lr("tri_stage", 0, BIOGPT)


def test_build_lr_fn_merges_optim_lr_and_max_update():
    import enum
    from dataclasses import dataclass

    from biogpt_train.train.lr_schedulers import build_lr_fn

    class Name(enum.Enum):
        polynomial_decay = "polynomial_decay"

    @dataclass
    class Cfg:
        name: Name = Name.polynomial_decay
        warmup_updates: int = 10
        total_num_update: int = 0  # 0 = trainer.max_update

    f = build_lr_fn(Cfg(), lr=[1e-3], max_update=110)
    assert f(0) == 0.0 and f(60) == pytest.approx(5e-4)
    g = build_lr_fn({"name": "inverse_sqrt", "warmup_updates": 500, "warmup_init_lr": 1e-7}, lr=1e-4)
    assert g(2000) == pytest.approx(5e-5)
    with pytest.raises(ValueError, match="total_num_update"):
        build_lr_fn(Cfg(), lr=1e-3)  # neither total_num_update nor max_update: fails at build time
    with pytest.raises(ValueError, match="unknown lr_scheduler"):
        build_lr_fn({"name": "nope"}, lr=1e-3)
