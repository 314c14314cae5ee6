"""The configuration schema: one dataclass per config group, registered in Hydra's ConfigStore.

The defaults live here, once: fairseq's, or BioGPT's where its scripts set a value on every run (Adam betas and
weight decay, warmup_init_lr, max_tokens). YAML under ``conf/<group>/`` exists only for real alternatives (model
shapes, tasks, LR schedulers, DDP/FSDP, decoding presets) and the paper recipes (``conf/experiment/``). A typo (``model.layrs=3``) or a bad value (``optim.lr=abc``) fails at compose time with a clear message.
Choices are ``str`` Enums (OmegaConf 2.3 rejects ``typing.Literal``); every nested default uses
``default_factory`` (mutable dataclass defaults are what broke fairseq on Python 3.11+).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

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
    squad = "squad"  # extractive QA on SQuAD v1.1/v2.0 JSON (encoders; biogpt_train/data/encoder_data.py)
    bioasq = "bioasq"  # BioASQ factoid QA in SQuAD format (BioBERT's files), snippet n-best merged per question
    electra_pretraining = "electra_pretraining"  # ELECTRA generator + discriminator on [CLS] A [SEP] B [SEP] blocks


class BreakMode(StrEnum):
    none = "none"
    complete = "complete"
    complete_doc = "complete_doc"
    eos = "eos"


class OptimizerName(StrEnum):
    adam = "adam"  # fairseq --optimizer adam: decoupled weight decay (AdamW)


class AdamEpsMode(StrEnum):
    fairseq = "fairseq"  # fairseq/optim/adam.py: eps added to sqrt(v) before the bias correction
    torch = "torch"  # torch.optim.AdamW: eps added after the bias correction


class AdamImpl(StrEnum):  # the kernel (both eps modes)
    auto = "auto"  # fused (one kernel; on CPU ~10x foreach)
    fused = "fused"
    foreach = "foreach"
    for_loop = "for_loop"


class SchedulerName(StrEnum):
    inverse_sqrt = "inverse_sqrt"
    polynomial_decay = "polynomial_decay"
    cosine = "cosine"
    fixed = "fixed"
    linear = "linear"  # ELECTRA/BioM: linear decay to 0 over all updates, times a linear warmup factor


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast bf16, fp32 parameters and optimizer state
    fp16 = "fp16"  # autocast fp16 + fairseq dynamic loss scaling


class CpuDropoutMasks(StrEnum):  # models/dropout.py
    numpy = "numpy"  # numpy SFC64 blocks keyed by one draw of torch's RNG per call, filled in parallel
    torch = "torch"  # torch's CPU bernoulli_ (serial mt19937, ~6x slower)


class NewRowsInit(StrEnum):
    fairseq = "fairseq"  # rows N..N+k of the Embedding fairseq-train draws right after seeding (BioGPT's)
    normal = "normal"  # N(0, d^-0.5) (biogpt) / N(0, initializer_range) (llama) from the current RNG state
    zeros = "zeros"


class FP16Weights(StrEnum):
    off = "off"  # fp32 weights, autocast (fairseq --amp)
    master = "master"  # fp16 weights + fp32 master copies in the optimizer (fairseq --fp16)
    memory_efficient = "memory_efficient"  # fp16 weights, fp32 moments only (fairseq --memory-efficient-fp16)


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


class ModelFamily(StrEnum):
    biogpt = "biogpt"  # biogpt_train/models/biogpt.py
    llama = "llama"  # biogpt_train/models/llama.py
    electra = "electra"  # biogpt_train/models/electra.py (ELECTRA and BERT encoders)


@dataclass
class LoraConfig:
    """LoRA adapters (biogpt_train/train/lora.py, the `peft` library): with rank > 0 only they train, and
    checkpoints hold the merged weights. `model.lora.rank=8` turns them on."""

    rank: int = 0  # 0: no adapters (every weight trains)
    alpha: float = 16.0  # scaling = alpha / rank
    dropout: float = 0.05
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    """A model shape, with one key vocabulary for every family (``biogpt_train.models.model_config`` maps it to
    the family's dataclass). ``conf/model/<arch>.yaml`` holds the named shapes; a key left null takes the family's
    default, and a key a family does not use must stay null. The vocabulary comes from the tokenizer/dictionary."""

    family: ModelFamily = ModelFamily.biogpt
    arch: str = "small"
    vocab_size: Optional[int] = None  # null: the dictionary's / tokenizer's size
    embed_dim: int = 512
    layers: int = 6
    heads: int = 8
    ffn_dim: int = 2048
    max_positions: int = 1024
    dropout: Optional[float] = None  # biogpt: 0.1; llama: 0.0
    attention_dropout: Optional[float] = None  # biogpt: 0.1; llama: 0.0
    activation_dropout: Optional[float] = None  # biogpt only (0.0)
    # llama
    kv_heads: Optional[int] = None  # grouped-query attention: kv_heads < heads
    norm_eps: Optional[float] = None  # RMSNorm epsilon (Llama-2: 1e-5, BioMedGPT-LM: 1e-6)
    rope_theta: Optional[float] = None
    tie_embeddings: Optional[bool] = None
    initializer_range: Optional[float] = None
    pad_id: Optional[int] = None
    # electra (encoders)
    style: Optional[str] = None  # electra | bert
    embedding_size: Optional[int] = None  # ELECTRA: != embed_dim adds embeddings_project
    type_vocab_size: Optional[int] = None
    layer_norm_eps: Optional[float] = None
    hidden_act: Optional[str] = None
    classifier_dropout: Optional[float] = None
    head: Optional[str] = None  # qa | rtd | mlm | cls (null: qa)
    num_labels: Optional[int] = None  # cls head
    generator_size: Optional[float] = None  # ELECTRA pretraining: generator width / discriminator width
    generator_layers: Optional[float] = None  # ... and depth ratio
    lora: LoraConfig = field(default_factory=LoraConfig)


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
    add_unknown_prompt_words: bool = True  # fairseq add_if_not_exist: manual-prompt words outside dict.txt are added
    prefix: bool = False
    sep_token: str = "<seqsep>"
    mask_source_loss: bool = False  # True: loss on prompt+target only; BioGPT trains on the whole sequence
    # extractive QA (squad, bioasq): {data}/{split}.json in SQuAD format + {data}/vocab.txt; features at load time
    max_seq_length: int = 384  # BioM's TF recipe: 512
    doc_stride: int = 128  # step between context windows (BERT's meaning)
    max_query_length: int = 64
    do_lower_case: bool = True  # the WordPiece vocab's casing (BioM-ELECTRA: uncased)
    version_2_with_negative: bool = False  # SQuAD v2: unanswerable questions, null answer in post-processing
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    # electra_pretraining (google-research/electra defaults; Large uses mask_prob 0.25)
    mask_prob: float = 0.15
    disc_weight: float = 50.0
    gen_weight: float = 1.0
    sampling_temperature: float = 1.0


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
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])  # BioGPT's scripts; fairseq: (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01  # BioGPT's scripts; fairseq: 0.0
    decay_all_params: bool = True  # fairseq: one group; False: no decay on biases, norms (nanoGPT's split)
    eps_mode: AdamEpsMode = AdamEpsMode.fairseq  # docs/FIDELITY.md; torch: torch.optim.AdamW
    impl: AdamImpl = AdamImpl.auto  # eps_mode=torch only
    clip_norm: float = 0.0  # 0 = no clipping; the norm is still computed and logged
    # ELECTRA's layer-wise LR decay (fine-tuning): lr * decay^(L + 2 - depth) with embeddings at depth 0, block i
    # at i + 1 and everything else (the task head) at L + 2 (train/optim.py); null = off. BioM: 0.8 base, 0.9 large
    layerwise_lr_decay: Optional[float] = None


@dataclass
class LRSchedulerConfig:
    """LR as a pure function of the number of completed updates (biogpt_train.train.lr_schedulers: fairseq's
    formulas, framework-notes §2.5); peak = optim.lr. Keys a scheduler does not use are ignored by it."""

    name: SchedulerName = SchedulerName.inverse_sqrt
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7  # BioGPT's scripts (fairseq: -1 = 0 for inverse_sqrt, min_lr for cosine)
    end_learning_rate: float = 0.0  # polynomial_decay
    power: float = 1.0  # polynomial_decay
    total_num_update: int = 0  # polynomial_decay; 0 = trainer.max_update
    zero_lr_warmup_steps: int = 0  # polynomial_decay
    min_lr: float = 0.0  # cosine
    lr_period_updates: int = -1  # cosine; -1 = max_update - warmup_updates
    t_mult: float = 1.0  # cosine
    lr_shrink: float = 0.1  # cosine, fixed
    force_anneal: Optional[int] = None  # fixed
    warmup_ratio: float = 0.0  # linear: > 0 sets the warmup to int(ratio * total updates) (ELECTRA: 0.1)


@dataclass
class TrainerConfig:
    max_update: int = 0  # 0 = no limit
    max_epoch: int = 0  # 0 = no limit
    stop_time_hours: float = 0.0  # 0 = no limit; stops after the update that crosses it
    update_freq: int = 1  # micro-batches accumulated per update (per rank)
    precision: Precision = Precision.fp32
    device: Device = Device.auto
    fp16_weights: FP16Weights = FP16Weights.off  # with precision=fp16: fairseq's fp16 layouts (docs/FIDELITY.md)
    fp16_init_scale: float = 128.0
    fp16_scale_window: Optional[int] = None  # None: 2**14 / (world_size * update_freq), as fairseq
    min_loss_scale: float = 1e-4
    # non-finite loss/gradients. null = fairseq: fp32/bf16 raise at the first one (FloatingPointError); fp16 skips
    # the update and halves the loss scale (stops at min_loss_scale). N: skip up to N-1 in a row, stop at the N-th
    max_consecutive_nonfinite: Optional[int] = None
    validate_interval: int = 1  # epochs
    validate_interval_updates: int = 0  # 0 = only at epoch ends
    validate_mid_epoch_saves: bool = True  # fairseq validate_and_save: also validate at save_interval_updates saves
    disable_validation: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    tf32: bool = False  # BioGPT fine-tuned in true fp32 (torch 1.12 had no TF32 by default); true: faster on Ampere+
    # CPU: glibc keeps freed large blocks for reuse (no page faults on every update's big tensors; numerics
    # unchanged, the process keeps its peak heap). train/allocator.py
    cpu_keep_freed_memory: bool = True
    # CPU dropout masks (docs/FIDELITY.md #21): numpy = parallel SFC64 blocks keyed by torch's RNG (same seed, same
    # run; ~27% of a small bf16 update was torch's serial bernoulli_); torch = F.dropout's own stream. GPUs: F.dropout
    cpu_dropout_masks: CpuDropoutMasks = CpuDropoutMasks.numpy


@dataclass
class CheckpointConfig:
    save_dir: str = "checkpoints"  # relative to the run directory
    restore_file: str = "checkpoint_last.pt"
    finetune_from: Optional[str] = None  # weights only, on the first launch (no restore_file in save_dir)
    new_rows_init: NewRowsInit = NewRowsInit.fairseq  # embedding rows finetune_from lacks (learned1..N, ...)
    reset_optimizer: bool = False  # resume weights only: fresh optimizer, scaler and update count (hence LR)
    reset_dataloader: bool = False  # start the data from epoch 1
    # resuming mid-epoch on another number of ranks: false = error; true = continue at the same share of the epoch
    reshard_on_resume: bool = False
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
    # checkpoint<N>.pt / checkpoint_best.pt with Adam's moments (3x the weights); checkpoint_last.pt always has them
    save_optimizer_state_in_epoch_checkpoints: bool = False


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
    batch_size: int = 16  # sentences per batch; batches are sorted by prefix length (batched == one by one)
    max_tokens: Optional[int] = None  # and at most this many padded prefix tokens per batch (fairseq --max-tokens)
    # and prefixes at most this many tokens shorter than the batch's longest (None: no limit, fairseq's batches);
    # outputs are the same either way, the limit only avoids slow forced steps (bench/results/NOTES.md)
    max_length_gap: Optional[int] = 32
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
    # CPU float32 only: prepacked oneDNN linears, faster for batches/beams but another fp32 summation order, so
    # tokens may differ from the default in near-ties (docs/FIDELITY.md); off for the paper recipes
    fast_kernels: bool = False


@dataclass
class EvaluationConfig:
    """`generate` / `score` stages (biogpt_train/pipeline/evaluate.py); decoding options are in `generation`."""

    # directory of the raw task files the gold comes from; null: the raw_dir recorded in task.data's
    # manifest.json, then pipeline.prepare.raw_dir (when it prepares this task), then paths.shared/<task dir>
    raw_dir: Optional[str] = None
    gold: Optional[str] = None  # an explicit gold file (format as `python -m biogpt_train.score`); null: rules
    entities: Optional[str] = None  # bc5cdr name->MeSH map; null: {task.data}/{split}.entities.json, then raw_dir
    # scorer options (kd_dti/ddi: target_format); null entries come from the data's manifest settings
    scorer_options: Dict[str, Any] = field(default_factory=dict)
    max_examples: Optional[int] = None  # decode only the first N examples (smoke runs); gold is restricted to them
    restrict_gold: bool = False  # score against the decoded documents only (always on with max_examples)
    # auto | fp32 | fp16 | bf16 weights while decoding; auto = BioGPT's inference.py: fp16 on CUDA when the
    # checkpoint trained with fp16 weights (BioGPT-Large-QA), else fp32 (fp32 on CPU, with a note)
    dtype: str = "auto"
    output_dir: str = "eval"  # relative to the run directory
    results_file: str = "results.json"  # relative to the run directory
    model_label: Optional[str] = None  # results.json "model" (paper: biogpt, biogpt_large); null: model.arch
    # results.json "group" (the seeds of one setting); null: run_name + the overrides that change results
    group: Optional[str] = None
    baseline: bool = True
    reuse: bool = True  # keep existing predictions made with the same checkpoint, data and options


@dataclass
class PathsConfig:
    root: str = str(REPO_ROOT)
    runs: str = "${paths.root}/runs"  # run directories: runs/<run_name>/<run id>
    data: str = "${paths.root}/data-bin"  # prepared datasets (fairseq's conventional, git-ignored name)
    cache: str = "${paths.data}/cache"  # prepared sample data of the default run
    shared: str = "${paths.root}/../shared/data"  # raw task data and tokenizer files, read in place
    pretrained: str = "${paths.root}/checkpoints"  # released checkpoints (Pre-trained-BioGPT/checkpoint.pt, ...)


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
