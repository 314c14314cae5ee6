"""Training objectives other than the decoders' next-token NLL (which the trainer computes itself).

An objective is `fn(model, sample, device) -> summed loss` (a 0-dim tensor); the trainer divides the update's
gradients by the summed `sample["ntokens"]` of all micro-batches and ranks (fairseq's sample_size), so an
objective that averages over something else puts that count in `ntokens` (e.g. examples for QA).
OBJECTIVES maps a task name to its objective; tasks not listed train with the next-token NLL.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

Objective = Callable[[torch.nn.Module, dict, torch.device], torch.Tensor]

OBJECTIVES: dict[str, Objective] = {}


def objective_for(cfg) -> Optional[Objective]:
    return OBJECTIVES.get(str(cfg.task.name))
