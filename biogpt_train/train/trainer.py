"""The training loop: fairseq-train's semantics for BioGPT on torch 2.x.

One update = `update_freq` micro-batches per rank (fairseq GroupedIterator). For each: forward, summed token NLL
(`cross_entropy(reduction="sum")`, pads ignored), backward; DDP's no_sync on all but the last micro-batch. Then ONE
all-reduce of [loss, target tokens, sentences, flags]; gradients (already averaged over W ranks by DDP/FSDP) are
multiplied by W / total_tokens (÷ loss scale under fp16), so every update is the per-token mean over all
micro-batches of all ranks (framework-notes §2.6). Then the grad norm (always computed), optional clipping, the
non-finite / fp16-overflow check (fp16: skip, neither num_updates nor the LR advance; fp32/bf16: FloatingPointError,
as fairseq), and the optimizer step.

Dropout is reseeded every update with seed + num_updates (fairseq `_set_seed`), the LR is a pure function of
num_updates, and batches are a function of (seed, epoch, position): with the checkpointed optimizer, scaler and
iterator position, a resumed run repeats an uninterrupted one update for update.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch

from biogpt_train import distributed
from biogpt_train.checkpoint.io import read_checkpoint
from biogpt_train.config import resolved_dict
from biogpt_train.data.iterators import EpochBatchIterator, group
from biogpt_train.data.splits import (
    build_dictionary, data_dirs, load_split, make_iterator, max_positions, tokenizer_files,
)
from biogpt_train.logging import IntervalMeter, MetricWriter, base2, memory_gb, perplexity
from biogpt_train.models import build_model, get_family, model_config
from biogpt_train.models.dropout import set_cpu_masks
from biogpt_train.train.allocator import keep_freed_memory
from biogpt_train.train.lora import apply_lora
from biogpt_train.train.lr_schedulers import build_lr_fn
from biogpt_train.train.objectives import dummy_sample, model_options, objective_for
from biogpt_train.train.state import Counters, TrainState
from biogpt_train.train.optim import build_optimizer, set_lr
from biogpt_train.train.precision import DynamicLossScaler, autocast, default_scale_window, fp16_weights_mode
from biogpt_train.distributed.parallelize import no_sync, parallelize
from biogpt_train.checkpoint import training as ckpt
from biogpt_train.train import progress
from biogpt_train.train.resume import load_resume
from biogpt_train.utils import set_seed

logger = logging.getLogger("biogpt_train")


# Slurm preemption / time limit (sbatch --signal=USR1@90; submitit sends USR2): save, then exit cleanly
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class NonFiniteLossError(FloatingPointError):
    pass


def nonfinite_limit(configured: int | None, loss_scaled: bool) -> float:
    """How many non-finite updates in a row stop the run. fairseq (configured=None): the first one without a loss
    scaler (FloatingPointError "gradients are Nan/Inf"); none with one (fp16 skips and lowers the scale)."""
    if configured is None:
        return math.inf if loss_scaled else 1
    if configured < 1:
        raise ValueError(f"trainer.max_consecutive_nonfinite must be >= 1 or null, not {configured}")
    return configured


# --- the trainer -----------------------------------------------------------------------------------------------
def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together (fairseq's gnorm), as a device tensor.

    Plain fp32 CPU tensors: one BLAS dot per tensor, the squares summed in fp64. torch's CPU norm kernel runs on one
    thread and accumulates in fp32 lanes: for the 347M-parameter shapes it takes 164 ms and is off by 5e-4
    (relative, against an fp64 sum); the dots take 82 ms and are off by 7e-6 (measured, 2 threads). Elsewhere
    (GPUs, FSDP's DTensors, low-precision grads) torch.nn.utils.get_total_norm's computation (fp16 grads: in fp32,
    as fairseq).
    """
    if all(type(g) is torch.Tensor and g.device.type == "cpu" and g.dtype == torch.float32 for g in grads):
        squares = torch.stack([torch.dot(g.reshape(-1), g.reshape(-1)) for g in grads])
        return squares.double().sum().sqrt().float()
    wide = {"dtype": torch.float32} if grads[0].dtype != torch.float32 else {}
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, **wide)))
    if hasattr(norm, "full_tensor"):  # FSDP: a partial DTensor -> reduce over shards
        norm = norm.full_tensor()
    return norm


class Trainer:
    def __init__(self, cfg, run_dir: Path, info: distributed.DistInfo):
        self.cfg, self.run_dir, self.info, self.device = cfg, Path(run_dir), info, info.device
        self.save_dir = self.run_dir / cfg.checkpoint.save_dir
        self.state = Counters()
        self.train_state = TrainState(self)
        self.launch_time = time.perf_counter()
        self.signal_received: int | None = None
        set_seed(cfg.seed)
        # the LR schedule, built (and checked) once: bad settings fail here, not at some later update; an
        # epoch-limited run (max_update 0) builds it once the data says how many updates max_epoch makes
        if cfg.trainer.max_update or not cfg.trainer.max_epoch:
            self.lr_fn = self._build_lr_fn(cfg.trainer.max_update)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high" if cfg.trainer.tf32 else "highest")
        if self.device.type == "cpu" and cfg.trainer.cpu_keep_freed_memory:
            keep_freed_memory()  # process-wide: large buffers are reused, not page-faulted in every update
        set_cpu_masks(str(cfg.trainer.cpu_dropout_masks))  # process-wide, like TF32

        self.family = str(cfg.model.family)
        self.objective = objective_for(cfg)  # None: next-token NLL (_loss)
        self.dictionary = build_dictionary(cfg)
        self.model_options = model_options(cfg, self.dictionary)  # encoders: head (qa | pretrain | ...) and its args
        resume = self._find_resume()
        self.raw_model = self._build_model(resume)  # weights loaded before wrapping: FSDP shards the loaded values
        adapters = resume["train_state"].get("lora") if resume is not None else None
        self.raw_model = apply_lora(self.raw_model, cfg.model.get("lora"), adapters)  # model.lora.rank > 0
        self.model_config = self.raw_model.cfg
        self.fp16_weights = fp16_weights_mode(cfg.trainer)  # None, or fairseq's --fp16 / --memory-efficient-fp16
        if self.fp16_weights:
            self.raw_model.half()  # exact for weights a resumed run saved in fp16
        self.autocast_precision = "fp32" if self.fp16_weights else cfg.trainer.precision  # half weights: no autocast
        self.model = parallelize(self.raw_model.to(self.device), cfg, info.world_size, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg.optim, self.device,
                                         master_weights=self.fp16_weights == "master")
        self.scaler = None
        if str(cfg.trainer.precision) == "fp16":
            window = cfg.trainer.fp16_scale_window or default_scale_window(info.world_size, cfg.trainer.update_freq)
            self.scaler = DynamicLossScaler(cfg.trainer.fp16_init_scale, window, cfg.trainer.min_loss_scale)
        self.max_positions = max_positions(cfg, self.dictionary, self.model_config.max_positions)
        self.train_itr = self._train_iterator(1)
        if not hasattr(self, "lr_fn"):
            self.lr_fn = self._build_lr_fn(self._epoch_limited_updates())
        self.valid_itrs = {}
        if resume is not None:
            self.train_state.load_state_dict(resume["train_state"])
        self.writer = MetricWriter(self.run_dir, cfg.logging, info.is_main, cfg.trainer.max_update)

    # --- setup ---------------------------------------------------------------------------------------------
    def _find_resume(self) -> dict | None:
        path = Path(self.cfg.checkpoint.restore_file)
        path = path if path.is_absolute() else self.save_dir / path
        found = load_resume(path, self.save_dir)  # an unreadable file: the newest readable one, said so
        if found is None:
            return None
        obj, path = found
        logger.info("resuming from %s", path)
        if obj["dictionary"] != self.dictionary.symbols:
            raise ValueError(f"{path}: its dictionary ({len(obj['dictionary'])} symbols) differs from "
                             f"{data_dirs(self.cfg)[0] / 'dict.txt'} + prompts ({len(self.dictionary)}); the data "
                             "changed since the checkpoint was written")
        return obj

    def _model_config(self, vocab_size: int):
        """The family's config dataclass for cfg.model with this vocabulary (and the dictionary's pad id)."""
        pad = {"biogpt": {"padding_idx": self.dictionary.pad()}}.get(str(self.cfg.model.family), {})
        return model_config(self.cfg.model, vocab_size, **pad)

    def _build_model(self, resume: dict | None) -> torch.nn.Module:
        vocab = len(self.dictionary)
        if resume is not None:
            model = build_model(self.family, self._model_config(vocab), **self.model_options)
            model.load_state_dict(resume["model"], strict=True)
            return model
        src = self.cfg.checkpoint.finetune_from
        if not src:
            return build_model(self.family, self._model_config(vocab), **self.model_options)
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
        model = build_model(self.family, self._model_config(mc.vocab_size), **self.model_options)
        sd = loaded.state_dict
        if self.family == "electra":  # HF legacy buffers, tied MLM head; another head starts fresh (rtd -> qa)
            from biogpt_train.checkpoint.hf_encoder import _adapt_state_dict

            sd = _adapt_state_dict(model, sd, str(src), same_head=loaded.head == self.model_options.get("head"))
        model.load_state_dict(sd, strict=True)
        if mc.vocab_size < vocab:  # learned1..N etc.: fairseq's rows for this seed (reference §2.5)
            init = str(self.cfg.checkpoint.new_rows_init)
            logger.info("growing the vocabulary %d -> %d rows for added symbols (%s init)", mc.vocab_size, vocab, init)
            if init == "fairseq" and self.family == "biogpt":
                model.resize_vocab(vocab, init="fairseq", seed=self.cfg.seed)
            else:  # other families have no fairseq original: their own N(0, std) init
                model.resize_vocab(vocab, init="normal" if init == "fairseq" else init)
        logger.info("fine-tuning from %s (%s format)", src, loaded.source_format)
        return model

    def _train_iterator(self, epoch: int) -> EpochBatchIterator:
        ds = load_split(self.cfg, self.dictionary, self.cfg.task.train_subset, epoch)
        return make_iterator(self.cfg, ds, self.cfg.task.train_subset, self.info, epoch, self.max_positions)

    def resume_iterator(self, state: dict) -> EpochBatchIterator:
        """The train iterator positioned where `state` says (LM shards rotate per epoch: load that epoch's)."""
        itr = self._train_iterator(int(state["epoch"])) if len(data_dirs(self.cfg)) > 1 else self.train_itr
        itr.load_state_dict(state)
        return itr

    # --- one update ----------------------------------------------------------------------------------------
    def _dummy_batch(self) -> dict:
        """Zero-weight stand-in for an empty shard entry: keeps every rank's forward/backward/collectives aligned."""
        if self.objective is not None:
            return dummy_sample(self.cfg, self.dictionary)
        eos, pad = self.dictionary.eos(), self.dictionary.pad()
        return {"net_input": {"src_tokens": torch.tensor([[eos]])}, "target": torch.tensor([[pad]]),
                "ntokens": 0, "nsentences": 0}

    def _loss(self, sample: dict) -> torch.Tensor:
        """The summed loss of one micro-batch; the update divides by the samples' summed `ntokens` (fairseq's
        sample_size). Decoders: token NLL (below); other objectives (encoders) come from train/objectives.py."""
        if self.objective is not None:
            with autocast(self.autocast_precision, self.device):
                return self.objective(self.model, sample, self.device)
        tokens = sample["net_input"]["src_tokens"].to(self.device, non_blocking=True)
        target = sample["target"].to(self.device, non_blocking=True)
        # fairseq's loss: fp32 log-softmax, NLL summed over non-pad targets. Every decoder fuses it with its output
        # projection (`target=`, models/loss.py: no [B, T, V] fp32 logits); collate pads on the right, so the
        # causal mask alone is exact at real positions (SDPA's causal kernel).
        with autocast(self.autocast_precision, self.device):
            return self.model(tokens, target=target, ignore_index=self.dictionary.pad(),
                              **get_family(self.family).right_padded)

    def lr(self, epoch: int) -> float:
        return self.lr_fn(self.state.num_updates, epoch)

    def _build_lr_fn(self, max_update: int | None):
        total = self.cfg.lr_scheduler.total_num_update or None
        return build_lr_fn({**dict(self.cfg.lr_scheduler), "total_num_update": total}, lr=self.cfg.optim.lr,
                           max_update=max_update)

    def _epoch_limited_updates(self) -> int | None:
        """max_epoch x updates per epoch, for schedules over a whole epoch-limited run (ELECTRA's num_train_steps)."""
        tc = self.cfg.trainer
        if not tc.max_epoch:
            return None
        n = len(self.train_itr)
        return tc.max_epoch * (n // tc.update_freq if self.cfg.data.skip_remainder_batch else -(-n // tc.update_freq))

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
        norm = total_norm(grads)
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
        limit = nonfinite_limit(self.cfg.trainer.max_consecutive_nonfinite, self.scaler is not None)
        logger.warning("update %d skipped: non-finite %s (loss %s, grad norm %s); %d in a row, %d in total%s",
                       self.state.num_updates + 1, "gradients" if math.isfinite(loss_sum) else "loss", loss_sum,
                       gnorm, self.state.nonfinite_in_a_row, self.state.skipped_updates,
                       f"; loss scale now {self.scaler.loss_scale:g}" if self.scaler is not None else "")
        if self.state.nonfinite_in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self.state.nonfinite_in_a_row} update(s) in a row had a non-finite loss or gradient (limit "
                f"{limit}: trainer.max_consecutive_nonfinite={self.cfg.trainer.max_consecutive_nonfinite}) at update "
                f"{self.state.num_updates + 1}. Lower optim.lr, "
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
        obj = ckpt.build_checkpoint(self.model, self.optimizer, self.dictionary, resolved_dict(self.cfg),
                                    self.train_state.state_dict(epoch), tokenizer_files(self.cfg))  # collective (FSDP)
        if self.info.is_main:
            t0 = time.perf_counter()
            paths = write_with_light_copies(obj, self.save_dir, names, c.save_optimizer_state_in_epoch_checkpoints)
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
        if signum == signal.SIGINT and self.signal_received is not None:  # a second Ctrl-C: abort right now
            logger.warning("second Ctrl-C: aborting without saving")
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        self.signal_received = signum
        logger.warning("received %s: stopping after this update and saving checkpoint_last.pt%s",
                       signal.Signals(signum).name,
                       "; press Ctrl-C again to abort without saving" if signum == signal.SIGINT else "")

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
            handlers = {s: signal.signal(s, self._on_signal) for s in (*PREEMPTION_SIGNALS, signal.SIGINT)}
        n_params = sum(p.numel() for p in self.raw_model.parameters())
        logger.info("model %s: %.1fM parameters, vocab %d, %d rank(s) on %s, %s; up to %d tokens per update",
                    cfg.model.arch, n_params / 1e6, len(self.dictionary), self.info.world_size, self.device,
                    tc.precision, (cfg.data.max_tokens or 0) * tc.update_freq * self.info.world_size)
        interval, epoch_meter = IntervalMeter(), IntervalMeter()
        self.stop_signal = self.stop_time = False
        stop = tc.max_update > 0 and self.state.num_updates >= tc.max_update
        done = progress.already_complete(cfg, self.state.num_updates, self.train_itr.next_epoch_idx)
        if done and self.info.is_main:
            logger.warning("train: %s is already complete (%s): nothing to train, later stages use its checkpoints. "
                           "To train again use a new run_name=... or delete that directory; to train longer raise "
                           "the budget", self.run_dir, done)
        meter = progress.Progress(max_update=tc.max_update, max_epoch=tc.max_epoch, stop_time_hours=tc.stop_time_hours,
                                  start_update=self.state.num_updates, elapsed_before=self.state.elapsed,
                                  enabled=self.info.is_main and not done)
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
                    meter.step(self.state.num_updates, epoch, epoch_itr.n, -(-len(epoch_itr) // tc.update_freq),
                               base2(last["loss_sum"], last["ntokens"]) if last["ntokens"] else None)
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
            previous = handlers.get(self.signal_received) if self.signal_received != signal.SIGINT else None
            if callable(previous):  # e.g. submitit's USR2 handler: it requeues the job, now that the checkpoint exists
                logger.warning("%s", msg)
                previous(self.signal_received, None)
            raise distributed.Preempted(msg, requeued=callable(previous))
        result = {"num_updates": self.state.num_updates, "best_loss": self.state.best,
                  "valid_loss": self.state.val_loss, "skipped_updates": self.state.skipped_updates}
        if self.info.is_main and not done:
            why = progress.stop_reason(cfg, self.state.num_updates, self.train_itr.next_epoch_idx, self.stop_time)
            logger.info("%s", progress.summary(cfg, self.run_dir, self.save_dir, result, self.elapsed(), why))
        return result

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
            tc.validate_mid_epoch_saves and do_save and not end_of_epoch) or (
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
        ctrl_c = trainer.signal_received == signal.SIGINT  # the user stopped it: no Slurm requeue
        if info.is_main and cfg.distributed.requeue_on_signal and not e.requeued and not ctrl_c:
            distributed.requeue_slurm_job()
        raise


def write_with_light_copies(obj: dict, save_dir: Path, names: list[str], keep_optimizer: bool) -> list[Path]:
    """Write the checkpoint under `names`; epoch and best checkpoints (read by `average`/`generate`, not by resume)
    leave the optimizer state out unless `keep_optimizer`: a third of the bytes for Adam."""
    light = [] if keep_optimizer else [n for n in names if ckpt.EPOCH_RE.search(n) or n == "checkpoint_best.pt"]
    full = [n for n in names if n not in light]
    paths = ckpt.write_checkpoint(obj, save_dir, full) if full else []
    if light:
        ts = {k: v for k, v in obj["train_state"].items() if k != "optimizer"}
        paths += ckpt.write_checkpoint(dict(obj, train_state=ts), save_dir, light)
    return paths
