"""Training objectives other than the decoders' next-token NLL (which the trainer computes itself).

An objective is `fn(model, sample, device) -> summed loss` (a 0-dim tensor); the trainer divides the update's
gradients by the summed `sample["ntokens"]` of all micro-batches and ranks (fairseq's sample_size), so an
objective that averages over something else puts that count in `ntokens` (e.g. examples for QA).
OBJECTIVES maps a task name to its objective; tasks not listed train with the next-token NLL.

- `qa` (squad, bioasq): transformers' `*ForQuestionAnswering` loss, (CE(start) + CE(end)) / 2 per feature, summed
  over the features; ntokens = features, so an update is the per-feature mean. Positions outside the sequence
  are clamped to T and ignored, as transformers does.
- `electra_pretrain` (electra_pretraining): ELECTRA's loss `gen_weight * mean MLM + disc_weight * mean RTD` of
  the micro-batch (models/electra_pretraining.py), multiplied by its non-pad token count, with ntokens = that count.
  With one micro-batch on one rank this is exactly ELECTRA's loss; across micro-batches and ranks it is their
  token-weighted mean (exact for the RTD term, whose mean is over tokens; the MLM term's mean is over masked
  positions, ~15% of the tokens of each row, so its weighting is the same up to rounding).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

Objective = Callable[[torch.nn.Module, dict, torch.device], torch.Tensor]


def _to(sample: dict, device: torch.device, keys) -> list[torch.Tensor]:
    return [sample[k].to(device, non_blocking=True) for k in keys]


def qa_loss(model: torch.nn.Module, sample: dict, device: torch.device) -> torch.Tensor:
    ids, types, mask, start, end = _to(sample, device, ("input_ids", "token_type_ids", "attention_mask",
                                                        "start_positions", "end_positions"))
    start_logits, end_logits = model(ids, mask, types)
    T = start_logits.size(1)
    loss = (F.cross_entropy(start_logits.float(), start.clamp(0, T), ignore_index=T, reduction="sum")
            + F.cross_entropy(end_logits.float(), end.clamp(0, T), ignore_index=T, reduction="sum"))
    return loss / 2


def electra_pretrain_loss(model: torch.nn.Module, sample: dict, device: torch.device) -> torch.Tensor:
    batch = dict(zip(("input_ids", "attention_mask", "token_type_ids"),
                     _to(sample, device, ("input_ids", "attention_mask", "token_type_ids"))))
    loss, _ = model(batch)
    return loss * sample["ntokens"]


OBJECTIVES: dict[str, Objective] = {
    "squad": qa_loss,
    "bioasq": qa_loss,
    "electra_pretraining": electra_pretrain_loss,
}


def objective_for(cfg) -> Optional[Objective]:
    return OBJECTIVES.get(str(cfg.task.name))


def model_options(cfg, dictionary) -> dict:
    """`build_model` keyword arguments beyond the config: the encoder head (`model.head`; default `qa`, and
    `pretrain` for the electra_pretraining task) and, for `pretrain`, ELECTRA's objective settings."""
    if str(cfg.model.family) != "electra":
        return {}
    task = str(cfg.task.name)
    head = cfg.model.get("head") or ("pretrain" if task == "electra_pretraining" else "qa")
    wanted = {"squad": "qa", "bioasq": "qa", "electra_pretraining": "pretrain"}.get(task)
    if wanted is not None and head != wanted:
        raise ValueError(f"task {task} trains the {wanted!r} head, but model.head={head}; set model.head={wanted}")
    if head == "cls":
        return {"head": "cls", "num_labels": cfg.model.get("num_labels") or 2}
    if head != "pretrain":
        return {"head": head}
    if getattr(dictionary, "mask_id", None) is None:
        raise ValueError(f"{getattr(dictionary, 'path', 'the vocabulary')}: no [MASK] token; ELECTRA pretraining "
                         "needs one")
    m, t = cfg.model, cfg.task
    return {"head": "pretrain", "mask_id": dictionary.mask_id, "special_ids": (dictionary.cls_id, dictionary.sep_id),
            "generator_size": m.get("generator_size") or 0.25, "generator_layers": m.get("generator_layers") or 1.0,
            "mask_prob": float(t.mask_prob), "disc_weight": float(t.disc_weight), "gen_weight": float(t.gen_weight),
            "temperature": float(t.sampling_temperature)}


def dummy_sample(cfg, dictionary) -> dict:
    """A minimal real batch for the trainer's zero-weight dummy steps (uneven shards keep ranks aligned)."""
    cls, sep, unk = dictionary.bos(), dictionary.eos(), dictionary.unk()
    ids = torch.tensor([[cls, unk, sep]])
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
              "ntokens": 0, "nsentences": 0}
    if str(cfg.task.name) != "electra_pretraining":
        sample.update(start_positions=torch.zeros(1, dtype=torch.long), end_positions=torch.zeros(1, dtype=torch.long))
    return sample
