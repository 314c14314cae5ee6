"""Process-group setup and the few collectives the trainer needs.

Launch modes, detected in this order (submitit's TorchDistributedEnvironment uses the same order):
  torchrun (single or multi node)   RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set by torchrun
  srun / submitit, one task per GPU SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS (MASTER_ADDR from the node list)
  plain `python -m biogpt_train`    world size 1, no process group
Nothing is spawned here: fairseq's in-process spawning is what broke Hydra logging (hydra#1126).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger("biogpt_train")


class Preempted(Exception):
    """SIGTERM/SIGUSR1/SIGUSR2 (Slurm preemption) arrived; checkpoint_last.pt was saved. Relaunching the same
    command resumes from it, so this is a clean exit, not an error. `requeued`: a launcher (submitit) already did."""

    def __init__(self, message: str, requeued: bool = False):
        super().__init__(message)
        self.requeued = requeued


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list ("gpu[003-005,7],cpu1" -> "gpu003"), without calling scontrol."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^\[,]+)(?:\[([^\],\-]+))?", nodelist)
    return m.group(1) + (m.group(2) or "") if m else "127.0.0.1"


def detect_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun or Slurm; exports the torchrun variables for env://."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, local, world = int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_NTASKS"])
        env.setdefault("MASTER_ADDR", _first_slurm_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))))
        # a port derived from the job id, so concurrent jobs on one node do not collide
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        env.update(RANK=str(rank), LOCAL_RANK=str(local), WORLD_SIZE=str(world))
        return rank, local, world
    return 0, 0, 1


def pick_device(device: str, local_rank: int) -> torch.device:
    device = str(device)
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but CUDA is not available; use trainer.device=cpu or auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


_INFO: DistInfo | None = None
_ARGS: tuple = ()  # (device, backend) of the call that initialised


def init(device: str = "auto", backend: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Initialise the default process group when launched with several processes. Idempotent: a later call with
    the same arguments returns the first call's DistInfo; one asking for another device or backend is an error
    (it would otherwise be silently ignored)."""
    global _INFO, _ARGS
    if _INFO is not None:
        if (str(device), str(backend)) != _ARGS:
            raise RuntimeError(f"distributed.init was already called with device={_ARGS[0]!r}, backend={_ARGS[1]!r}; "
                               f"a second call asks for device={device!r}, backend={backend!r} (call destroy() first)")
        return _INFO
    rank, local_rank, world = detect_env()
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = str(backend)
        if backend == "auto":
            backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if dev.type == "cuda" else None,
        )
    _INFO, _ARGS = DistInfo(rank, local_rank, world, dev), (str(device), str(backend))
    return _INFO


def info() -> DistInfo:
    """This process's rank information (without a process group before `init`)."""
    if _INFO is not None:
        return _INFO
    rank, local_rank, world = detect_env()
    return DistInfo(rank, local_rank, world)


def destroy() -> None:
    global _INFO
    _INFO = None
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (no-op on one process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def requeue_slurm_job() -> None:
    """`scontrol requeue <job>` after the preemption checkpoint (rank 0); best effort, no-op outside Slurm."""
    env = os.environ
    job = env.get("SLURM_JOB_ID")
    if env.get("SLURM_ARRAY_JOB_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID')}"
    if not job:
        return
    try:
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        logger.info("requeued Slurm job %s", job)
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("could not requeue Slurm job %s: %s", job, e)
