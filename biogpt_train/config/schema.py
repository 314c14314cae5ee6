"""The configuration schema: one dataclass per config group, registered in Hydra's ConfigStore.

Values live in YAML under ``conf/<group>/``; these dataclasses only fix the key names, types and (fairseq) defaults,
so a typo (``model.layrs=3``) or a bad value (``optim.lr=abc``) fails at compose time with a clear message.
Choices are ``str`` Enums (OmegaConf 2.3 rejects ``typing.Literal``); every nested default uses
``default_factory`` (mutable dataclass defaults are what broke fairseq on Python 3.11+).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

from omegaconf import MISSING

from biogpt_train.evaluate import EvaluationConfig  # light import: no torch, no cycle

REPO_ROOT = Path(__file__).resolve().parents[2]


class StrEnum(str, Enum):
    """A choice that compares and formats as its value (`str(Precision.bf16) == "bf16"`)."""

    def __str__(self) -> str:
        return self.value


class TaskName(StrEnum):
    language_modeling = "language_modeling"
    bc5cdr = "bc5cdr"
    kd_dti = "kd_dti"
    ddi = "ddi"
    pubmedqa = "pubmedqa"
    hoc = "hoc"


class BreakMode(StrEnum):
    none = "none"
    complete = "complete"
    complete_doc = "complete_doc"
    eos = "eos"


class OptimizerName(StrEnum):
    adam = "adam"  # fairseq --optimizer adam: decoupled weight decay (AdamW)


class AdamImpl(StrEnum):
    auto = "auto"  # fused on CUDA and CPU (one kernel; ~10x foreach on CPU), foreach otherwise
    fused = "fused"
    foreach = "foreach"
    for_loop = "for_loop"


class SchedulerName(StrEnum):
    inverse_sqrt = "inverse_sqrt"
    polynomial_decay = "polynomial_decay"
    cosine = "cosine"
    fixed = "fixed"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast bf16, fp32 parameters and optimizer state
    fp16 = "fp16"  # autocast fp16 + fairseq dynamic loss scaling


class Device(StrEnum):
    auto = "auto"  # cuda:LOCAL_RANK when CUDA is available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Backend(StrEnum):
    auto = "auto"  # nccl on CUDA, gloo on CPU
    nccl = "nccl"
    gloo = "gloo"


class DataParallel(StrEnum):
    ddp = "ddp"
    fsdp = "fsdp"  # torch fully_shard (FSDP2), one unit per decoder layer + the root


@dataclass
class ModelConfig:
    """Decoder shape (``biogpt_train.model.transformer_lm.ModelConfig`` minus the vocabulary, which comes from
    the dictionary). ``arch`` names the preset the values were copied from (``conf/model/<arch>.yaml``)."""

    arch: str = "small"
    embed_dim: int = 512
    layers: int = 6
    heads: int = 8
    ffn_dim: int = 2048
    max_positions: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0


@dataclass
class TaskConfig:
    """What is trained on: the LM corpus or a fine-tuning task's prepared pair data (reference §5.1)."""

    name: TaskName = TaskName.language_modeling
    # prepared directory (dict.txt + binarized splits); fairseq's "a:b:c" = one shard per epoch, round robin
    data: str = MISSING
    train_subset: str = "train"
    valid_subset: str = "valid"  # comma-separated for several, as fairseq
    # language modelling
    tokens_per_sample: int = 1024
    sample_break_mode: BreakMode = BreakMode.none
    # fine-tuning (BioGPT's language_modeling_prompt task)
    source_lang: str = "x"
    target_lang: str = "y"
    max_source_positions: int = 384
    max_target_positions: int = 1024
    learned_prompt: int = 0  # number of learned prompt tokens learned1..N appended to the dictionary
    learned_prompt_pattern: str = "learned"
    manual_prompt: Optional[str] = None
    prefix: bool = False
    sep_token: str = "<seqsep>"
    mask_source_loss: bool = False  # True: loss on prompt+target only; BioGPT trains on the whole sequence


@dataclass
class DataConfig:
    """Batching (fairseq ``dataset`` section)."""

    max_tokens: Optional[int] = 1024  # padded tokens per batch per GPU (bsz x max_len)
    batch_size: Optional[int] = None  # max sentences per batch
    max_tokens_valid: Optional[int] = None  # None: as max_tokens
    batch_size_valid: Optional[int] = None
    required_batch_size_multiple: int = 8
    skip_invalid_size_inputs_valid_test: bool = False
    update_ordered_indices_seed: bool = False
    skip_remainder_batch: bool = False


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 5e-4  # peak learning rate
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_all_params: bool = True  # fairseq: one group; False: no decay on biases, norms (nanoGPT's split)
    impl: AdamImpl = AdamImpl.auto
    clip_norm: float = 0.0  # 0 = no clipping; the norm is still computed and logged


@dataclass
class LRSchedulerConfig:
    """LR as a pure function of the number of completed updates (biogpt_train.optim.lr_schedulers: fairseq's
    formulas, framework-notes §2.5); peak = optim.lr. Keys a scheduler does not use are ignored by it."""

    name: SchedulerName = SchedulerName.inverse_sqrt
    warmup_updates: int = 4000
    warmup_init_lr: float = -1.0  # -1: 0 (inverse_sqrt) / min_lr (cosine)
    end_learning_rate: float = 0.0  # polynomial_decay
    power: float = 1.0  # polynomial_decay
    total_num_update: int = 0  # polynomial_decay; 0 = trainer.max_update
    zero_lr_warmup_steps: int = 0  # polynomial_decay
    min_lr: float = 0.0  # cosine
    lr_period_updates: int = -1  # cosine; -1 = max_update - warmup_updates
    t_mult: float = 1.0  # cosine
    lr_shrink: float = 0.1  # cosine, fixed
    force_anneal: Optional[int] = None  # fixed


@dataclass
class TrainerConfig:
    max_update: int = 0  # 0 = no limit
    max_epoch: int = 0  # 0 = no limit
    stop_time_hours: float = 0.0  # 0 = no limit; stops after the update that crosses it
    update_freq: int = 1  # micro-batches accumulated per update (per rank)
    precision: Precision = Precision.fp32
    device: Device = Device.auto
    fp16_init_scale: float = 128.0
    fp16_scale_window: Optional[int] = None  # None: 2**14 / (world_size * update_freq), as fairseq
    min_loss_scale: float = 1e-4
    max_consecutive_nonfinite: int = 10  # stop after this many skipped (non-finite) updates in a row
    validate_interval: int = 1  # epochs
    validate_interval_updates: int = 0  # 0 = only at epoch ends
    disable_validation: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    tf32: bool = True


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints"  # relative to the run directory
    restore_file: str = "checkpoint_last.pt"
    finetune_from: Optional[str] = None  # weights only, on the first launch (no restore_file in save_dir)
    reset_optimizer: bool = False  # resume weights only: fresh optimizer, scaler and update count (hence LR)
    reset_dataloader: bool = False  # start the data from epoch 1
    save_interval: int = 1  # epochs
    save_interval_updates: int = 0
    keep_interval_updates: int = -1
    keep_last_epochs: int = -1
    no_epoch_checkpoints: bool = False
    no_last_checkpoints: bool = False
    no_save: bool = False
    best_checkpoint_metric: str = "loss"
    maximize_best_checkpoint_metric: bool = False
    average_last_epochs: int = 5  # `average` stage: fairseq average_checkpoints --num-epoch-checkpoints
    average_output: str = "checkpoint_avg.pt"


@dataclass
class DistributedConfig:
    backend: Backend = Backend.auto
    data_parallel: DataParallel = DataParallel.ddp
    timeout_minutes: int = 30
    bucket_cap_mb: int = 25
    find_unused_parameters: bool = False
    fsdp_reshard_after_forward: bool = True
    requeue_on_signal: bool = True  # Slurm: `scontrol requeue` after the preemption checkpoint


@dataclass
class LoggingConfig:
    log_interval: int = 100  # updates per console/TensorBoard/jsonl line
    tensorboard: bool = True
    tensorboard_dir: str = "tb"  # relative to the run directory
    jsonl: str = "metrics.jsonl"  # relative to the run directory; "" = off
    level: str = "INFO"


@dataclass
class GenerationConfig:
    """Decoding options for the `generate` stage (reference §6: BioGPT decodes greedily)."""

    subset: str = "test"
    checkpoint: str = "checkpoint_avg.pt"  # in checkpoint.save_dir, or an absolute path
    batch_size: int = 16
    beam: int = 1
    max_len_b: int = 1024
    min_len: int = 1
    lenpen: float = 1.0
    no_repeat_ngram_size: int = 0
    sampling: bool = False
    temperature: float = 1.0
    topk: int = 0
    topp: float = 0.0
    seed: Optional[int] = None


@dataclass
class PathsConfig:
    root: str = str(REPO_ROOT)
    runs: str = MISSING
    data: str = MISSING
    cache: str = MISSING
    shared: str = MISSING
    pretrained: str = MISSING


@dataclass
class PrepareConfig:
    """`prepare` stage: ``python -m data_prep dataset=<dataset> raw_dir=<raw_dir> out_dir=<task.data> <args...>``,
    run only when ``task.data`` is missing or incomplete."""

    dataset: Optional[str] = None
    raw_dir: Optional[str] = None
    args: List[str] = field(default_factory=list)


@dataclass
class PipelineConfig:
    stages: List[str] = field(default_factory=lambda: ["train"])
    objective: Optional[str] = None  # a key of the stage results returned to Hydra (sweepers), e.g. best_loss
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


@dataclass
class Config:
    run_name: str = "default"
    seed: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
