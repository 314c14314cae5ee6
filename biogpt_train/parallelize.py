"""Parallelism, activation checkpointing and compilation as functions on an unchanged TransformerLM (torchtitan).

Order (as torchtitan's parallelize_llama): activation checkpointing -> per-layer torch.compile -> FSDP or DDP.
None of them renames parameters of the plain model: checkpointing and compile wrap each layer's forward in place,
and `get_model_state_dict` / `get_optimizer_state_dict` strip DDP's `module.` and read FSDP's sharded DTensors,
so checkpoints always hold the fairseq `decoder.*` names.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.decoder.layers


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each decoder layer in backward (non-reentrant; dropout masks are replayed from the saved RNG)."""
    for layer in decoder_layers(model):
        forward = layer.forward
        layer.forward = functools.partial(checkpoint, forward, use_reentrant=False)
    return model


def apply_compile(model: nn.Module) -> nn.Module:
    """torch.compile each decoder layer (the model's forward keeps its data-dependent pad-mask branch eager)."""
    for layer in decoder_layers(model):
        layer.compile()
    return model


def apply_fsdp(model: nn.Module, reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2 (`fully_shard`): one unit per decoder layer, the root holds the tied embedding/output projection.

    Parameters stay fp32 (autocast does the low-precision compute), so numerics match DDP; gradients are averaged
    across ranks as DDP's, and the trainer's W / total_tokens normalisation applies unchanged.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


def apply_ddp(model: nn.Module, device: torch.device, bucket_cap_mb: int = 25,
              find_unused_parameters: bool = False) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=bucket_cap_mb,
        find_unused_parameters=find_unused_parameters,
        broadcast_buffers=False,  # the only buffer is fairseq's constant `decoder.version`
    )


def parallelize(model: nn.Module, cfg, world_size: int, device: torch.device) -> nn.Module:
    """Apply what cfg.trainer / cfg.distributed ask for; returns the model to call in the train loop."""
    if cfg.trainer.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.trainer.compile:
        apply_compile(model)
    if world_size > 1:
        if str(cfg.distributed.data_parallel) == "fsdp":
            return apply_fsdp(model, cfg.distributed.fsdp_reshard_after_forward)
        return apply_ddp(model, device, cfg.distributed.bucket_cap_mb, cfg.distributed.find_unused_parameters)
    return model


def no_sync(model: nn.Module, enabled: bool):
    """DDP's no_sync on accumulation micro-batches (all but the last of an update). FSDP reduce-scatters every
    micro-batch, as fairseq's fully_sharded did (keeping unsharded gradients would defeat the sharding)."""
    if enabled and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()

