"""The training loop: fairseq-train's semantics for BioGPT on torch 2.x.

One update = `update_freq` micro-batches per rank (fairseq GroupedIterator). For each: forward, summed token NLL
(`cross_entropy(reduction="sum")`, pads ignored), backward; DDP's no_sync on all but the last micro-batch. Then ONE
all-reduce of [loss, target tokens, sentences, flags]; gradients (already averaged over W ranks by DDP/FSDP) are
multiplied by W / total_tokens (÷ loss scale under fp16), so every update is the per-token mean over all
micro-batches of all ranks (framework-notes §2.6). Then the grad norm (always computed), optional clipping, the
non-finite / fp16-overflow check (skip: neither num_updates nor the LR advance), and the optimizer step.

Dropout is reseeded every update with seed + num_updates (fairseq `_set_seed`), the LR is a pure function of
num_updates, and batches are a function of (seed, epoch, position): with the checkpointed optimizer, scaler and
iterator position, a resumed run repeats an uninterrupted one update for update.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from biogpt_train import distributed
from biogpt_train.checkpoints import read_checkpoint
from biogpt_train.config import resolved_dict
from biogpt_train.data.batching import make_batches
from biogpt_train.data.dictionary import Dictionary
from biogpt_train.data.indexed_dataset import MMapIndexedDataset, dataset_exists
from biogpt_train.data.iterators import EpochBatchIterator, group
from biogpt_train.data.lm_dataset import LMDataset
from biogpt_train.data.prompt_dataset import PromptDataset, prompt_ids
from biogpt_train.data.token_block import TokenBlockDataset
from biogpt_train.logging import IntervalMeter, MetricWriter, base2, memory_gb, perplexity
from biogpt_train.model.transformer_lm import ModelConfig, TransformerLM
from biogpt_train.optim.lr_schedulers import get_lr
from biogpt_train.optim.optimizer import build_optimizer, set_lr
from biogpt_train.optim.precision import DynamicLossScaler, autocast, default_scale_window
from biogpt_train.parallelize import no_sync, parallelize
from biogpt_train import train_checkpoint as ckpt
from biogpt_train.utils import set_seed

logger = logging.getLogger("biogpt_train")


# Slurm preemption / time limit (sbatch --signal=USR1@90; submitit sends USR2): save, then exit cleanly
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class NonFiniteLossError(FloatingPointError):
    pass


# --- data ----------------------------------------------------------------------------------------------------
def data_dirs(cfg) -> list[Path]:
    return [Path(p) for p in str(cfg.task.data).split(":") if p]


def build_dictionary(cfg) -> Dictionary:
    """dict.txt of the prepared data, plus learned1..N (and <seqsep> with prefix) appended as BioGPT's task does."""
    path = data_dirs(cfg)[0] / "dict.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: prepare the data first (pipeline stage `prepare`, or "
                                f"`python -m data_prep ...`), or point task.data at a prepared directory")
    d = Dictionary.load(path)
    for k in range(1, cfg.task.learned_prompt + 1):
        d.add_symbol(f"{cfg.task.learned_prompt_pattern}{k}")
    if cfg.task.prefix:
        d.add_symbol(cfg.task.sep_token)
    return d


def load_split(cfg, d: Dictionary, split: str, epoch: int = 1):
    """The dataset of `split`; LM shards rotate per epoch as fairseq's "a:b:c" data paths."""
    dirs = data_dirs(cfg)
    root = dirs[(epoch - 1) % len(dirs)] if split == cfg.task.train_subset else dirs[0]
    if str(cfg.task.name) == "language_modeling":
        prefix = root / split
        if not dataset_exists(prefix):
            raise FileNotFoundError(f"{prefix}.idx/.bin not found (language_modeling task, split {split!r})")
        blocks = TokenBlockDataset(MMapIndexedDataset(prefix), cfg.task.tokens_per_sample,
                                   str(cfg.task.sample_break_mode), include_targets=True, eos=d.eos(), pad=d.pad())
        return LMDataset(blocks, pad=d.pad(), shuffle=split == cfg.task.train_subset)
    t = cfg.task
    pair = f"{split}.{t.source_lang}-{t.target_lang}"
    src, tgt = root / f"{pair}.{t.source_lang}", root / f"{pair}.{t.target_lang}"
    for prefix in (src, tgt):
        if not dataset_exists(prefix):
            raise FileNotFoundError(f"{prefix}.idx/.bin not found ({t.name} task, split {split!r})")
    return PromptDataset(
        MMapIndexedDataset(src), MMapIndexedDataset(tgt),
        prompt_ids(d, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern),
        ellipsis_id=d.index("..."), max_source_positions=t.max_source_positions,
        max_target_positions=t.max_target_positions, prefix=t.prefix,
        sep_id=d.index(t.sep_token) if t.prefix else None, mask_source_loss=t.mask_source_loss,
        shuffle=split == t.train_subset, eos=d.eos(), pad=d.pad(),
    )


def max_positions(cfg, d: Dictionary, model_max: int) -> int:
    """fairseq's resolve_max_positions: longer items are dropped from train (and are an error in valid unless
    skip_invalid_size_inputs_valid_test). LM: the block size; prompt tasks: room left beside the prompt."""
    t = cfg.task
    if str(t.name) == "language_modeling":
        return min(t.tokens_per_sample, model_max)
    prompt = prompt_ids(d, t.manual_prompt, t.learned_prompt, t.learned_prompt_pattern)
    return min(t.max_target_positions, model_max) - len(prompt) - (1 if t.prefix else 0)


def make_iterator(cfg, dataset, split: str, info, epoch: int = 1, max_positions: int | None = None):
    train = split == cfg.task.train_subset
    dc = cfg.data
    max_tokens = dc.max_tokens if train or dc.max_tokens_valid is None else dc.max_tokens_valid
    batch_size = dc.batch_size if train or dc.batch_size_valid is None else dc.batch_size_valid
    seed = cfg.seed + (epoch if dc.update_ordered_indices_seed else 0)
    batches = make_batches(dataset, seed=seed, max_tokens=max_tokens, max_sentences=batch_size,
                           required_batch_size_multiple=dc.required_batch_size_multiple,
                           max_positions=max_positions, split="train" if train else split,
                           skip_invalid=dc.skip_invalid_size_inputs_valid_test)
    return EpochBatchIterator(batches, dataset=dataset, seed=cfg.seed, num_shards=info.world_size,
                              shard_id=info.rank, epoch=epoch, disable_shuffling=not train)


# --- the trainer -----------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    num_updates: int = 0
    best: float | None = None
    val_loss: float | None = None
    nonfinite_in_a_row: int = 0
    skipped_updates: int = 0
    elapsed: float = 0.0  # training seconds before this launch


class Trainer:
    def __init__(self, cfg, run_dir: Path, info: distributed.DistInfo):
        self.cfg, self.run_dir, self.info, self.device = cfg, Path(run_dir), info, info.device
        self.save_dir = self.run_dir / cfg.checkpoint.save_dir
        self.state = TrainState()
        self.launch_time = time.perf_counter()
        self.signal_received: int | None = None
        set_seed(cfg.seed)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high" if cfg.trainer.tf32 else "highest")

        self.dictionary = build_dictionary(cfg)
        resume = self._find_resume()
        self.raw_model = self._build_model(resume)  # weights loaded before wrapping: FSDP shards the loaded values
        self.model_config = self.raw_model.cfg
        self.model = parallelize(self.raw_model.to(self.device), cfg, info.world_size, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device)
        self.scaler = None
        if str(cfg.trainer.precision) == "fp16":
            window = cfg.trainer.fp16_scale_window or default_scale_window(info.world_size, cfg.trainer.update_freq)
            self.scaler = DynamicLossScaler(cfg.trainer.fp16_init_scale, window, cfg.trainer.min_loss_scale)
        self.max_positions = max_positions(cfg, self.dictionary, self.model_config.max_positions)
        self.train_itr = self._train_iterator(1)
        self.valid_itrs = {}
        if resume is not None:
            self._load_train_state(resume)
        self.writer = MetricWriter(self.run_dir, cfg.logging, info.is_main, cfg.trainer.max_update)

    # --- setup ---------------------------------------------------------------------------------------------
    def _find_resume(self) -> dict | None:
        path = Path(self.cfg.checkpoint.restore_file)
        path = path if path.is_absolute() else self.save_dir / path
        if not path.exists():
            return None
        logger.info("resuming from %s", path)
        obj = ckpt.load_checkpoint_file(path)
        if obj["dictionary"] != self.dictionary.symbols:
            raise ValueError(f"{path}: its dictionary ({len(obj['dictionary'])} symbols) differs from "
                             f"{data_dirs(self.cfg)[0] / 'dict.txt'} + prompts ({len(self.dictionary)}); the data "
                             "changed since the checkpoint was written")
        return obj

    def _model_config(self, vocab_size: int) -> ModelConfig:
        m = self.cfg.model
        return ModelConfig(vocab_size=vocab_size, embed_dim=m.embed_dim, layers=m.layers, heads=m.heads,
                           ffn_dim=m.ffn_dim, max_positions=m.max_positions, dropout=m.dropout,
                           attention_dropout=m.attention_dropout, activation_dropout=m.activation_dropout,
                           padding_idx=self.dictionary.pad())

    def _build_model(self, resume: dict | None) -> TransformerLM:
        vocab = len(self.dictionary)
        if resume is not None:
            model = TransformerLM(self._model_config(vocab))
            model.load_state_dict(resume["model"], strict=True)
            return model
        src = self.cfg.checkpoint.finetune_from
        if not src:
            return TransformerLM(self._model_config(vocab))
        # first launch of a fine-tuning run: weights only (optimizer, scheduler, iterator start fresh)
        loaded = read_checkpoint(src)
        mc, m = loaded.model_config, self.cfg.model
        mismatch = {k: (getattr(mc, k), m[k]) for k in ("embed_dim", "layers", "ffn_dim", "max_positions")
                    if getattr(mc, k) != m[k]}
        if mismatch:
            raise ValueError(f"{src}: model shape differs from the config (checkpoint, config): {mismatch}; "
                             f"choose the matching model group (e.g. model=biogpt)")
        base = loaded.dictionary_symbols
        if base is not None and list(base) != self.dictionary.symbols[: len(base)]:
            raise ValueError(f"{src}: its dictionary is not a prefix of {data_dirs(self.cfg)[0] / 'dict.txt'} "
                             "+ prompts; the data was prepared with another dictionary")
        if not mc.vocab_size <= vocab:
            raise ValueError(f"{src}: {mc.vocab_size} embedding rows but the dictionary (+ prompts) has only {vocab}")
        model = TransformerLM(self._model_config(mc.vocab_size))
        model.load_state_dict(loaded.state_dict, strict=True)
        if mc.vocab_size < vocab:  # learned1..N etc.: new rows N(0, d^-0.5), as BioGPT (reference §2.5)
            logger.info("growing the vocabulary %d -> %d rows for added symbols", mc.vocab_size, vocab)
            model.resize_vocab(vocab, init="normal")
        logger.info("fine-tuning from %s (%s format)", src, loaded.source_format)
        return model

    def _train_iterator(self, epoch: int) -> EpochBatchIterator:
        ds = load_split(self.cfg, self.dictionary, self.cfg.task.train_subset, epoch)
        return make_iterator(self.cfg, ds, self.cfg.task.train_subset, self.info, epoch, self.max_positions)

    def _load_train_state(self, obj: dict) -> None:
        ts, c = obj["train_state"], self.cfg.checkpoint
        self.state = TrainState(best=ts.get("best"), val_loss=ts.get("val_loss"),
                                skipped_updates=int(ts.get("skipped_updates", 0)), elapsed=float(ts.get("elapsed", 0)))
        if not c.reset_optimizer:  # as fairseq, the update count (hence the LR) goes with the optimizer state
            ckpt.load_optimizer_state(self.model, self.optimizer, ts["optimizer"])
            if self.scaler is not None and ts.get("scaler"):
                self.scaler.load_state_dict(ts["scaler"])
            self.state.num_updates = int(ts["num_updates"])
            self.state.nonfinite_in_a_row = int(ts.get("nonfinite_in_a_row", 0))
        if not c.reset_dataloader:
            it = ts["iterator"]
            if len(data_dirs(self.cfg)) > 1:
                self.train_itr = self._train_iterator(int(it["epoch"]))
            self.train_itr.load_state_dict(it)
        ckpt.set_rng_state(ts["rng"])

    # --- one update ----------------------------------------------------------------------------------------
    def _dummy_batch(self) -> dict:
        """Zero-weight stand-in for an empty shard entry: keeps every rank's forward/backward/collectives aligned."""
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        return {"net_input": {"src_tokens": torch.tensor([[eos]])}, "target": torch.tensor([[pad]]),
                "ntokens": 0, "nsentences": 0}

    def _loss(self, sample: dict) -> torch.Tensor:
        tokens = sample["net_input"]["src_tokens"].to(self.device, non_blocking=True)
        target = sample["target"].to(self.device, non_blocking=True)
        # fairseq's loss: fp32 log-softmax, NLL summed over non-pad targets (fused with the output projection).
        # Collate pads on the right, so the causal mask alone is exact at real positions (SDPA's causal kernel).
        with autocast(self.cfg.trainer.precision, self.device):
            return self.model(tokens, pad_mask=False, target=target)

    def lr(self, epoch: int) -> float:
        sc = dict(self.cfg.lr_scheduler)
        sc.update(lr=self.cfg.optim.lr, max_update=self.cfg.trainer.max_update,
                  total_num_update=sc["total_num_update"] or None)
        return get_lr(str(sc["name"]), self.state.num_updates, sc, epoch)

    def train_step(self, samples: list[dict], epoch: int) -> dict:
        self.model.train()
        torch.manual_seed(self.cfg.seed + self.state.num_updates)  # dropout = f(seed, update): exact resume
        lr = self.lr(epoch)
        set_lr(self.optimizer, lr)
        scale = self.scaler.loss_scale if self.scaler is not None else 1.0
        self.optimizer.zero_grad(set_to_none=True)
        loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        ntokens = nsentences = 0
        for i, sample in enumerate(samples):
            dummy = not sample
            sample = self._dummy_batch() if dummy else sample
            with no_sync(self.model, i < len(samples) - 1):
                loss = self._loss(sample)
                (loss * (0.0 if dummy else scale)).backward()
            if not dummy:
                loss_acc += loss.detach().double()
                ntokens += sample["ntokens"]
                nsentences += sample["nsentences"]
        # one collective per update: loss, target tokens, sentences, and the stop flags (every rank must agree)
        local = torch.tensor([0.0, ntokens, nsentences, self.signal_received is not None, self._out_of_time()],
                             dtype=torch.float64, device=self.device)
        local[0] = loss_acc
        stats = distributed.all_reduce_sum(local)

        # DDP/FSDP averaged over W ranks: W / total gives the per-token mean of the whole update. The factor stays
        # on the device (the same float64 arithmetic, then fp32 as a Python scalar would be): the update reads the
        # host once, below, for the loss, counts, flags and norm together
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            total = stats[1]
            factor = torch.where(total > 0, self.info.world_size / (total * scale), 1.0).float()
            torch._foreach_mul_(grads, factor)
        norm = self._grad_norm_and_clip(grads)
        stats = torch.cat([stats, norm.to(stats)[None]]).tolist()
        loss_sum, ntokens, nsentences, gnorm = stats[0], int(stats[1]), int(stats[2]), stats[5]
        self.stop_signal, self.stop_time = stats[3] > 0, stats[4] > 0
        finite = math.isfinite(gnorm) and math.isfinite(loss_sum)
        out = {"loss_sum": loss_sum, "ntokens": ntokens, "nsentences": nsentences, "gnorm": gnorm, "lr": lr,
               "loss_scale": scale, "skipped": not finite}
        if not finite:
            self._skip_update(loss_sum, gnorm)
            return out
        self.optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        self.state.num_updates += 1
        self.state.nonfinite_in_a_row = 0
        return out

    def _grad_norm_and_clip(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The total norm (a device tensor: no host read); gradients are clipped in place when asked."""
        if not grads:
            return torch.zeros((), device=self.device)
        # torch.nn.utils.get_total_norm (torch >= 2.6) computes exactly this
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if hasattr(norm, "full_tensor"):  # FSDP: a partial DTensor -> reduce over shards
            norm = norm.full_tensor()
        clip = self.cfg.optim.clip_norm
        if clip > 0:  # fairseq: grads * min(1, max_norm / (norm + 1e-6)), the factor computed in fp32
            # multiplied on the device without reading it (x * 1.0 == x exactly): no host sync
            torch._foreach_mul_(grads, (clip / (norm + 1e-6)).clamp(max=1.0))
        return norm

    def _skip_update(self, loss_sum: float, gnorm: float) -> None:
        """A non-finite loss/gradient (or fp16 overflow): no step, no LR move; stop after too many in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state.skipped_updates += 1
        self.state.nonfinite_in_a_row += 1
        if self.scaler is not None:
            self.scaler.check_overflow(float("inf"))  # halves the scale; raises at min_loss_scale
        limit = self.cfg.trainer.max_consecutive_nonfinite
        logger.warning("update %d skipped: non-finite %s (loss %s, grad norm %s); %d in a row, %d in total%s",
                       self.state.num_updates + 1, "gradients" if math.isfinite(loss_sum) else "loss", loss_sum,
                       gnorm, self.state.nonfinite_in_a_row, self.state.skipped_updates,
                       f"; loss scale now {self.scaler.loss_scale:g}" if self.scaler is not None else "")
        if self.state.nonfinite_in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self.state.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient (limit "
                f"trainer.max_consecutive_nonfinite={limit}) at update {self.state.num_updates + 1}. Lower optim.lr, "
                "enable optim.clip_norm, use trainer.precision=fp32/bf16, or inspect the data; the last good "
                f"checkpoint is in {self.save_dir}")

    # --- validation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, epoch: int) -> float | None:
        if self.cfg.trainer.disable_validation:
            return None
        self.model.eval()
        first = None
        for subset in str(self.cfg.task.valid_subset).split(","):
            if subset not in self.valid_itrs:
                ds = load_split(self.cfg, self.dictionary, subset)
                self.valid_itrs[subset] = make_iterator(self.cfg, ds, subset, self.info, 1, self.max_positions)
            loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
            ntokens = nsentences = 0
            for sample in self.valid_itrs[subset].next_epoch_itr(shuffle=False):
                loss = self._loss(sample or self._dummy_batch())  # dummies keep FSDP's collectives aligned
                if sample:
                    loss_acc += loss.double()
                    ntokens += sample["ntokens"]
                    nsentences += sample["nsentences"]
            stats = torch.tensor([0.0, ntokens, nsentences], dtype=torch.float64, device=self.device)
            stats[0] = loss_acc
            loss_sum, ntokens, nsentences = distributed.all_reduce_sum(stats).tolist()
            loss = base2(loss_sum, ntokens)
            if first is None:
                first = loss
                best = loss if self.state.best is None else (
                    max if self.cfg.checkpoint.maximize_best_checkpoint_metric else min)(self.state.best, loss)
            self.writer.log("valid" if subset == "valid" else f"valid_{subset}", self.state.num_updates, epoch,
                            {"loss": loss, "ppl": perplexity(loss), "ntokens": int(ntokens),
                             "nsentences": int(nsentences), "best_loss": best})
        return first

    # --- checkpoints ---------------------------------------------------------------------------------------
    def save(self, epoch: int, end_of_epoch: bool, val_loss: float | None) -> None:
        c = self.cfg.checkpoint
        better = val_loss is not None and (self.state.best is None or (
            val_loss >= self.state.best if c.maximize_best_checkpoint_metric else val_loss <= self.state.best))
        if better:
            self.state.best = val_loss
        if val_loss is not None:
            self.state.val_loss = val_loss
        if c.no_save:
            return
        names = ckpt.checkpoint_names(self.cfg, epoch, self.state.num_updates, end_of_epoch, better)
        if not names:
            return
        train_state = {
            "num_updates": self.state.num_updates, "epoch": epoch, "iterator": self.train_itr.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "lr_scheduler": {"name": str(self.cfg.lr_scheduler.name), "num_updates": self.state.num_updates},
            "rng": ckpt.rng_state(), "best": self.state.best, "val_loss": self.state.val_loss,
            "nonfinite_in_a_row": self.state.nonfinite_in_a_row, "skipped_updates": self.state.skipped_updates,
            "elapsed": self.elapsed(), "world_size": self.info.world_size,
        }
        obj = ckpt.build_checkpoint(self.model, self.optimizer, self.model_config, self.dictionary,
                                    resolved_dict(self.cfg), train_state)  # collective under FSDP
        if self.info.is_main:
            t0 = time.perf_counter()
            paths = ckpt.write_checkpoint(obj, self.save_dir, names)
            ckpt.prune_checkpoints(self.save_dir, self.cfg)
            logger.info("saved %s (epoch %d, update %d, %.1f s)", ", ".join(p.name for p in paths), epoch,
                        self.state.num_updates, time.perf_counter() - t0)
        distributed.barrier()  # nobody moves on (or exits) before the files exist

    # --- loop ----------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.elapsed + time.perf_counter() - self.launch_time

    def _out_of_time(self) -> bool:
        hours = self.cfg.trainer.stop_time_hours
        return hours > 0 and self.elapsed() > hours * 3600

    def _on_signal(self, signum, frame) -> None:
        self.signal_received = signum
        logger.warning("received %s: stopping after this update and saving checkpoint_last.pt",
                       signal.Signals(signum).name)

    def _log_train(self, meter: IntervalMeter, split: str, epoch: int, last: dict, pos=None) -> None:
        metrics = meter.summary()
        metrics.update(lr=last["lr"], mem_gb=memory_gb(self.device))
        if self.scaler is not None:
            metrics["loss_scale"] = self.scaler.loss_scale
        self.writer.log(split, self.state.num_updates, epoch, metrics, pos)
        meter.reset()

    def train(self) -> dict:
        cfg, tc = self.cfg, self.cfg.trainer
        handlers = {}
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread
            handlers = {s: signal.signal(s, self._on_signal) for s in PREEMPTION_SIGNALS}
        n_params = sum(p.numel() for p in self.raw_model.parameters())
        logger.info("model %s: %.1fM parameters, vocab %d, %d rank(s) on %s, %s; up to %d tokens per update",
                    cfg.model.arch, n_params / 1e6, len(self.dictionary), self.info.world_size, self.device,
                    tc.precision, (cfg.data.max_tokens or 0) * tc.update_freq * self.info.world_size)
        interval, epoch_meter = IntervalMeter(), IntervalMeter()
        self.stop_signal = self.stop_time = False
        stop = tc.max_update > 0 and self.state.num_updates >= tc.max_update
        try:
            while not stop and (tc.max_epoch == 0 or self.train_itr.next_epoch_idx <= tc.max_epoch):
                epoch = self.train_itr.next_epoch_idx
                if len(data_dirs(cfg)) > 1 and self.train_itr.epoch != epoch:  # next shard
                    self.train_itr = self._train_iterator(epoch)
                epoch_itr = self.train_itr.next_epoch_itr(shuffle=True)
                interval.reset()
                last = None
                for samples in group(epoch_itr, tc.update_freq, cfg.data.skip_remainder_batch):
                    last = self.train_step(samples, epoch)
                    interval.add(last)
                    epoch_meter.add(last)
                    if self.state.num_updates % cfg.logging.log_interval == 0 and not last["skipped"]:
                        self._log_train(interval, "train", epoch, last, (epoch_itr.n, len(epoch_itr)))
                    stop = self._validate_and_save(epoch, end_of_epoch=not epoch_itr.has_next())
                    if stop:
                        break
                if last is None:
                    raise RuntimeError(f"epoch {epoch} has no training batches: is {cfg.task.data}/"
                                       f"{cfg.task.train_subset} empty, or are all its items too long?")
                self._log_train(epoch_meter, "train_epoch", epoch, last)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            self.writer.close()
        if self.stop_signal:
            msg = (f"stopped by a signal at update {self.state.num_updates}; checkpoint saved in {self.save_dir}; "
                   "relaunch the same command to resume")
            previous = handlers.get(self.signal_received)
            if callable(previous):  # e.g. submitit's USR2 handler: it requeues the job, now that the checkpoint exists
                logger.warning("%s", msg)
                previous(self.signal_received, None)
            raise distributed.Preempted(msg, requeued=callable(previous))
        return {"num_updates": self.state.num_updates, "best_loss": self.state.best,
                "valid_loss": self.state.val_loss, "skipped_updates": self.state.skipped_updates}

    def _validate_and_save(self, epoch: int, end_of_epoch: bool) -> bool:
        """fairseq's validate_and_save: returns whether training should stop."""
        tc, c, n = self.cfg.trainer, self.cfg.checkpoint, self.state.num_updates
        stop = (tc.max_update > 0 and n >= tc.max_update) or self.stop_time or self.stop_signal
        if self.stop_signal:  # preemption: save as fast as possible, no validation
            self.save(epoch, end_of_epoch, None)
            return True
        do_save = (end_of_epoch and epoch % c.save_interval == 0) or stop or (
            c.save_interval_updates > 0 and n > 0 and n % c.save_interval_updates == 0)
        do_validate = (end_of_epoch and epoch % tc.validate_interval == 0) or stop or (
            tc.validate_interval_updates > 0 and n > 0 and n % tc.validate_interval_updates == 0)
        val_loss = self.validate(epoch) if do_validate else None
        if do_save:
            self.save(epoch, end_of_epoch, val_loss)
        elif val_loss is not None:
            self.state.val_loss = val_loss
        return stop


def train(cfg, run_dir: Path) -> dict:
    """The `train` pipeline stage."""
    info = distributed.init(cfg.trainer.device, cfg.distributed.backend, cfg.distributed.timeout_minutes)
    trainer = Trainer(cfg, run_dir, info)
    try:
        return trainer.train()
    except distributed.Preempted as e:
        if info.is_main and cfg.distributed.requeue_on_signal and not e.requeued:
            distributed.requeue_slurm_job()
        raise
