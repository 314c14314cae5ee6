"""ELECTRA pretraining objective: masked-LM generator + replaced-token-detection discriminator.

Follows google-research/electra (``pretrain_helpers.mask``, ``run_pretraining.PretrainingModel``):

* Masking: per sequence, k = clamp(round(n_tokens * mask_prob), 1, N) positions are chosen uniformly among the
  non-special tokens, N = max_predictions = int((mask_prob + 0.005) * T) (ELECTRA's max_predictions_per_seq);
  n_tokens counts the non-pad tokens ([CLS]/[SEP] included), as ELECTRA's ``input_mask`` sum does. Of the chosen
  positions 85% become [MASK] and 15% keep their token; there is NO random-token replacement (BERT's 80/10/10 is
  available with ``mask_frac=0.8, random_frac=0.1``). One deliberate difference: ELECTRA draws the N positions
  *with* replacement (``tf.random.categorical``), so a few predictions are duplicates; we draw without replacement.
* Generator loss: cross-entropy at the chosen positions, averaged over all of them in the batch.
* Fake input: every chosen position gets a token sampled from the generator (Gumbel-max on logits / temperature,
  no gradient); the discriminator label is "token differs from the original" (a sample equal to the original is
  labelled real).
* Discriminator loss: sigmoid cross-entropy averaged over all non-pad tokens of the batch.
* Total: ``gen_weight * mlm + disc_weight * rtd`` with ELECTRA's gen_weight 1, disc_weight 50 (both means, so
  the two terms do not depend on batch size or sequence length).

Everything stays on the device: no ``.item()``, no boolean indexing; the logs are 0-d tensors.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from biogpt_train.models.electra import (ElectraDiscriminator, ElectraGenerator, EncoderConfig, EncoderConfigError,
                                         build_encoder, generator_config,
                                         tie_electra_embeddings)


class Masked(NamedTuple):
    input_ids: torch.Tensor  # [B, T] generator input, with [MASK]s
    positions: torch.Tensor  # [B, N] chosen positions (distinct within a row)
    labels: torch.Tensor  # [B, N] original token at each position
    weights: torch.Tensor  # [B, N] bool: the first k of N are real predictions; the rest are filler


def max_predictions_per_seq(seq_len: int, mask_prob: float) -> int:
    return max(1, min(seq_len, int((mask_prob + 0.005) * seq_len)))


def mask_tokens(input_ids: torch.Tensor, special_mask: torch.Tensor, *, mask_id: int, mask_prob: float = 0.15,
                attention_mask: Optional[torch.Tensor] = None, max_predictions: Optional[int] = None,
                mask_frac: float = 0.85, random_frac: float = 0.0, vocab_size: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> Masked:
    """Choose and corrupt positions to predict (module docstring). ``special_mask`` [B, T] bool is True where a
    token must never be chosen ([CLS], [SEP], padding). ``generator`` must live on the tensors' device."""
    if random_frac > 0 and vocab_size is None:
        raise ValueError("mask_tokens: random_frac > 0 needs vocab_size")
    B, T = input_ids.shape
    dev = input_ids.device
    N = min(T, max_predictions or max_predictions_per_seq(T, mask_prob))
    cand = ~special_mask.bool()
    n_tokens = (attention_mask.bool() if attention_mask is not None else cand).sum(1)
    k = torch.round(n_tokens * mask_prob).long().clamp(1, N)
    k = torch.minimum(k, cand.sum(1))
    # Random scores, candidates in [0, 1) and the rest at -1: the top N start with a uniform random subset of
    # the candidates, and topk's indices are distinct, so the filler positions never collide with real ones.
    scores = torch.rand(B, T, device=dev, generator=generator).masked_fill(~cand, -1.0)
    positions = scores.topk(N, dim=1).indices
    weights = torch.arange(N, device=dev) < k[:, None]
    labels = input_ids.gather(1, positions)
    u = torch.rand(B, N, device=dev, generator=generator)
    new = torch.where(weights & (u < mask_frac), torch.full_like(labels, mask_id), labels)
    if random_frac > 0:
        rand_ids = torch.randint(vocab_size, labels.shape, device=dev, generator=generator)
        new = torch.where(weights & (u >= mask_frac) & (u < mask_frac + random_frac), rand_ids, new)
    return Masked(input_ids.scatter(1, positions, new), positions, labels, weights)


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One token per row of ``logits`` [..., V] from softmax(logits / temperature) (ELECTRA's sample_from_softmax)."""
    u = torch.rand(logits.shape, device=logits.device, generator=generator)
    gumbel = -torch.log(-torch.log(u + 1e-9) + 1e-9)
    return (logits.float() / temperature + gumbel).argmax(-1)


def electra_loss(generator_model: ElectraGenerator, discriminator_model: ElectraDiscriminator, batch: dict, *,
                 mask_id: int, mask_prob: float = 0.15, max_predictions: Optional[int] = None,
                 gen_weight: float = 1.0, disc_weight: float = 50.0, temperature: float = 1.0,
                 special_ids: tuple = (), rng: Optional[torch.Generator] = None):
    """(loss, logs) for one batch: ``input_ids`` [B, T], optional ``attention_mask`` and ``token_type_ids``, and
    ``special_mask`` (or pass ``special_ids``, e.g. (cls_id, sep_id), and the padding is added from the mask)."""
    ids = batch["input_ids"]
    am = batch.get("attention_mask")
    tt = batch.get("token_type_ids")
    special = batch.get("special_mask")
    if special is None:
        special = torch.zeros_like(ids, dtype=torch.bool)
        for s in special_ids:  # scalar compares: no host-to-device copy
            special |= ids == s
        if am is not None:
            special = special | ~am.bool()
    m = mask_tokens(ids, special, mask_id=mask_id, mask_prob=mask_prob, attention_mask=am,
                    max_predictions=max_predictions, generator=rng)

    gen_logits = generator_model(m.input_ids, am, tt, positions=m.positions).float()  # [B, N, V]
    w = m.weights.float()
    nll = F.cross_entropy(gen_logits.transpose(1, 2), m.labels, reduction="none")
    mlm_loss = (nll * w).sum() / (w.sum() + 1e-6)

    with torch.no_grad():
        sampled = torch.where(m.weights, gumbel_sample(gen_logits.detach(), temperature, rng), m.labels)
        fake = ids.scatter(1, m.positions, sampled)
        replaced = fake != ids
    disc_logits = discriminator_model(fake, am, tt).float()  # [B, T]
    tok = torch.ones_like(disc_logits) if am is None else am.float()
    rtd = F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="none")
    rtd_loss = (rtd * tok).sum() / (tok.sum() + 1e-6)
    loss = gen_weight * mlm_loss + disc_weight * rtd_loss

    with torch.no_grad():
        gen_acc = ((gen_logits.argmax(-1) == m.labels).float() * w).sum() / (w.sum() + 1e-6)
        disc_acc = (((disc_logits > 0) == replaced).float() * tok).sum() / (tok.sum() + 1e-6)
        logs = {"loss": loss.detach(), "mlm_loss": mlm_loss.detach(), "rtd_loss": rtd_loss.detach(),
                "gen_acc": gen_acc, "disc_acc": disc_acc, "n_masked": w.sum(),
                "replaced_frac": (replaced.float() * tok).sum() / (tok.sum() + 1e-6)}
    return loss, logs


class ElectraPretraining(nn.Module):
    """Generator + discriminator with shared embeddings, as one module (one optimizer, one DDP/FSDP wrapper).

    ``parameters()`` yields the shared embedding tensors once. Export each half with save_hf_encoder."""

    def __init__(self, disc_cfg: EncoderConfig, *, mask_id: int, generator_size: float = 0.25,
                 generator_layers: float = 1.0, mask_prob: float = 0.15, disc_weight: float = 50.0,
                 gen_weight: float = 1.0, temperature: float = 1.0, special_ids: tuple = ()):
        super().__init__()
        self.discriminator = ElectraDiscriminator(disc_cfg)
        self.generator = ElectraGenerator(generator_config(disc_cfg, generator_size, generator_layers))
        tie_electra_embeddings(self.generator, self.discriminator)
        self.kw = dict(mask_id=mask_id, mask_prob=mask_prob, disc_weight=disc_weight, gen_weight=gen_weight,
                       temperature=temperature, special_ids=tuple(special_ids))

    @property
    def config(self) -> EncoderConfig:  # the discriminator's: the model that is kept after pretraining
        return self.discriminator.config

    cfg = config  # the name the trainer uses for every family

    def max_positions(self) -> int:
        return self.discriminator.config.max_positions

    @property
    def blocks(self) -> nn.ModuleList:
        """Both stacks' layers (activation checkpointing, compile and FSDP units), discriminator first."""
        return nn.ModuleList([*self.discriminator.blocks, *self.generator.blocks])

    def forward(self, batch: dict, rng: Optional[torch.Generator] = None):
        return electra_loss(self.generator, self.discriminator, batch, rng=rng, **self.kw)


def build_electra(cfg: EncoderConfig, head: str = "qa", num_labels: Optional[int] = None, **pretrain) -> nn.Module:
    """The electra family's builder: an encoder with one of electra.HEADS, or with ``head="pretrain"`` the
    generator + discriminator pair (``pretrain`` holds ElectraPretraining's keyword arguments, mask_id among them)."""
    if head == "pretrain":
        return ElectraPretraining(cfg, **pretrain)
    if pretrain:
        raise EncoderConfigError(f"options {sorted(pretrain)} apply to head 'pretrain' only, not {head!r}")
    return build_encoder(cfg, head, num_labels)
