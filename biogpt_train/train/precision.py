"""Mixed precision: an autocast context per precision, fp16 weights, and fairseq's dynamic loss scaler for fp16.

By default parameters and optimizer state stay fp32 (fairseq's `--amp` layout); bf16/fp16 only change the
forward/backward compute dtype through autocast. ``trainer.fp16_weights`` (with ``precision=fp16``) gives fairseq's
fp16 layouts instead: the model is ``half()``, runs without autocast (logits go to an fp32 log-softmax), and
FairseqAdam keeps fp32 moments: ``master`` adds fp32 master weights (``--fp16``), ``memory_efficient`` recomputes
the fp32 update from the half weights (``--memory-efficient-fp16``, BioGPT-Large-QA's). The fp16 loss scaler
follows fairseq's `DynamicLossScaler` exactly (framework-notes §2.9): start at 128, halve on overflow (never below
`min_loss_scale`, else stop), double after `scale_window` updates without overflow, window 2**14 / (world_size *
update_freq). An overflow skips the update: the trainer then advances neither `num_updates` nor the LR.
"""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """Context for forward + loss; fp32 -> no-op."""
    precision = str(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def fp16_weights_mode(trainer_cfg) -> str | None:
    """``master`` | ``memory_efficient`` when the model trains with fp16 weights, None for fp32 weights."""
    mode = str(trainer_cfg.fp16_weights)
    if mode == "off":
        return None
    if str(trainer_cfg.precision) != "fp16":
        raise ValueError(f"trainer.fp16_weights={mode} needs trainer.precision=fp16 (got {trainer_cfg.precision}); "
                         "use trainer.fp16_weights=off with bf16/fp32")
    return mode


def default_scale_window(world_size: int, update_freq: int) -> int:
    """fairseq: int(2**14 / distributed_world_size / update_freq[0])."""
    return max(int(2**14 / world_size / update_freq), 1)


class MinimumLossScaleError(FloatingPointError):
    pass


class DynamicLossScaler:
    """fairseq `DynamicLossScaler` (tolerance 0): `check_overflow(grad_norm)` -> True when the step must be skipped.

    The trainer multiplies the loss by `loss_scale` before backward and divides the gradients by it afterwards.
    """

    def __init__(self, init_scale: float = 128.0, scale_window: int = 2000, min_loss_scale: float = 1e-4,
                 scale_factor: float = 2.0):
        self.loss_scale = float(init_scale)
        self.scale_window = int(scale_window)
        self.min_loss_scale = float(min_loss_scale)
        self.scale_factor = float(scale_factor)
        self._iter = 0
        self._last_overflow_iter = -1
        self._last_rescale_iter = -1

    def check_overflow(self, grad_norm: float) -> bool:
        """Record one update's gradient norm; on overflow lower the scale and return True (skip the step)."""
        if grad_norm == float("inf") or grad_norm != grad_norm:
            prev = self.loss_scale
            self._last_overflow_iter = self._iter
            self.loss_scale /= self.scale_factor  # tolerance 0: every overflow lowers the scale
            self._last_rescale_iter = self._iter
            if self.loss_scale <= self.min_loss_scale:
                self.loss_scale = prev
                raise MinimumLossScaleError(
                    f"minimum loss scale reached ({self.min_loss_scale}): the loss keeps overflowing in fp16. "
                    "Lower the learning rate, use trainer.precision=bf16/fp32, or check the data for bad batches."
                )
            self._iter += 1
            return True
        return False

    def update(self) -> None:
        """After a successful step: grow the scale every `scale_window` updates without overflow."""
        if (self._iter - self._last_overflow_iter) % self.scale_window == 0:
            self.loss_scale *= self.scale_factor
            self._last_rescale_iter = self._iter
        self._iter += 1

    def state_dict(self) -> dict:
        return {"loss_scale": self.loss_scale, "scale_window": self.scale_window, "iter": self._iter,
                "last_overflow_iter": self._last_overflow_iter, "last_rescale_iter": self._last_rescale_iter}

    def load_state_dict(self, state: dict) -> None:
        self.loss_scale = float(state["loss_scale"])
        self._iter = int(state["iter"])
        self._last_overflow_iter = int(state["last_overflow_iter"])
        self._last_rescale_iter = int(state["last_rescale_iter"])
