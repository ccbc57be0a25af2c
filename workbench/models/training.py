"""A small, reproducible training loop: AdamW, warm-up + cosine schedule, periodic validation, tqdm progress.

Lesson: ``notebooks/00_tour.ipynb`` (Train your own micro model).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class TrainRecord:
    step: int
    train_loss: float
    val_loss: float | None
    tokens_per_s: float
    lr: float


@dataclass
class TrainHistory:
    """What :func:`train` returns: one record per evaluation, plus totals. Losses are in nats per token."""

    records: list[TrainRecord] = field(default_factory=list)
    tokens_seen: int = 0
    wall_s: float = 0.0

    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.records]

    @property
    def train_loss(self) -> list[float]:
        return [r.train_loss for r in self.records]

    @property
    def val_loss(self) -> list[float | None]:
        return [r.val_loss for r in self.records]

    @property
    def final_val_loss(self) -> float | None:
        vals = [v for v in self.val_loss if v is not None]
        return vals[-1] if vals else None


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _as_ids(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.long)
    if t.dim() != 1:
        raise ValueError(f"token ids must be 1-D, got shape {tuple(t.shape)}")
    return t.long()


def random_windows(data: torch.Tensor, batch_size: int, block: int, gen: torch.Generator, bos: int | None = None):
    """``batch_size`` random windows of ``block + 1`` tokens -> inputs and next-token targets ``(B, block)``.

    With ``bos`` (a token id) each window is ``bos`` followed by ``block`` tokens of ``data``: position 0
    of every input row is the BOS, and the targets are the ``block`` data tokens.
    """
    n = block if bos is not None else block + 1
    starts = torch.randint(0, len(data) - n + 1, (batch_size,), generator=gen)
    w = data[starts[:, None] + torch.arange(n)[None, :]]
    if bos is not None:
        w = torch.cat([torch.full((batch_size, 1), bos, dtype=w.dtype), w], dim=1)
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def evaluate(model, data, block_size: int | None = None, batch_size: int = 16, max_tokens: int | None = None,
             bos: int | None = None) -> float:
    """Mean next-token loss (nats) over consecutive non-overlapping windows of ``data`` (deterministic).

    With ``bos`` every window is ``bos`` + ``block`` consecutive tokens of ``data``, and all of those tokens
    are scored (the first from the BOS alone), as the model saw them in :func:`train` with the same ``bos``.
    """
    data = _as_ids(data)
    if max_tokens is not None:
        data = data[: max_tokens + 1]
    block = min(block_size or model.config.block_size, len(data) - 1)
    if block < 1:
        raise ValueError("need at least 2 tokens to evaluate")
    was_training = model.training
    model.eval()
    if bos is None:
        n_win = (len(data) - 1) // block
        x = data[: n_win * block].view(n_win, block)
        y = data[1 : n_win * block + 1].view(n_win, block)
    else:
        n_win = len(data) // block
        y = data[: n_win * block].view(n_win, block)
        x = torch.cat([torch.full((n_win, 1), bos, dtype=y.dtype), y[:, :-1]], dim=1)
    total, count = 0.0, 0
    for i in range(0, n_win, batch_size):
        logits = model(x[i : i + batch_size].to(model.device)).logits
        total += F.cross_entropy(logits.flatten(0, 1), y[i : i + batch_size].flatten().to(model.device),
                                 reduction="sum").item()
        count += y[i : i + batch_size].numel()
    model.train(was_training)
    return total / count


def training_setup(model, seed: int, lr: float, weight_decay: float = 0.1, betas=(0.9, 0.95)):
    """Seed and build what a training run steps with: ``torch.manual_seed(seed)`` (dropout), a generator seeded
    with ``seed`` for batch sampling (:func:`random_windows`), and AdamW with weight decay on the weight matrices
    and embeddings (``dim >= 2``) and none on biases and norms. Returns ``(optimizer, generator)``.

    :func:`train` and the data lab's ``train_student`` both start here, so the same seed gives both the same
    batches and the same weights.
    """
    torch.manual_seed(seed)  # dropout
    gen = torch.Generator().manual_seed(seed)  # batch sampling
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
    return opt, gen


def set_lr(opt, step: int, steps: int, lr: float, warmup: int) -> float:
    """Set every parameter group's learning rate to :func:`lr_at` for ``step`` and return it."""
    cur_lr = lr_at(step, steps, lr, warmup)
    for g in opt.param_groups:
        g["lr"] = cur_lr
    return cur_lr


def apply_gradients(model, opt, loss, grad_clip: float, running: float | None) -> float:
    """One optimiser step on ``loss`` (gradients cleared, back-propagated, their norm clipped to ``grad_clip``
    unless it is 0) and the running training loss after it: ``0.9 * running + 0.1 * loss`` (the loss itself
    when ``running`` is None)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    li = loss.item()
    return li if running is None else 0.9 * running + 0.1 * li


def train(model, train_ids, steps: int, batch_size: int = 16, lr: float = 3e-3, *, val_ids=None,
          block_size: int | None = None, warmup: int | None = None, weight_decay: float = 0.1,
          betas=(0.9, 0.95), grad_clip: float = 1.0, eval_every: int | None = None, eval_tokens: int = 32_768,
          seed: int = 0, progress: bool = True, desc: str = "training", bos: int | None = None) -> TrainHistory:
    """Train ``model`` on next-token prediction over random windows of ``train_ids`` (1-D ids).

    ``bos`` (a token id, e.g. ``tokenizer.bos_id``) puts that token at position 0 of every training window
    and of every validation window (see :func:`random_windows` and :func:`evaluate`).

    The same ``seed`` on the same machine gives the same weights and history. Returns a :class:`TrainHistory`
    with (step, train loss, val loss, tokens/s) at every evaluation.
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    data = _as_ids(train_ids)
    block = min(block_size or model.config.block_size, model.config.block_size)
    if len(data) < block + 2:
        raise ValueError(f"training data has {len(data)} tokens; need more than block_size + 1 = {block + 1}")
    val = _as_ids(val_ids) if val_ids is not None else None
    warmup = max(1, steps // 20) if warmup is None else warmup
    eval_every = eval_every or max(1, steps // 10)

    opt, gen = training_setup(model, seed, lr, weight_decay, betas)
    hist = TrainHistory()
    model.train()
    t0 = time.perf_counter()
    t_last, tok_last, running = t0, 0, None
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=0.5, leave=True)
    for step in bar:
        cur_lr = set_lr(opt, step, steps, lr, warmup)
        x, y = random_windows(data, batch_size, block, gen, bos)
        x, y = x.to(model.device), y.to(model.device)
        logits = model(x).logits
        running = apply_gradients(model, opt, F.cross_entropy(logits.flatten(0, 1), y.flatten()), grad_clip, running)
        hist.tokens_seen += x.numel()
        if (step + 1) % eval_every == 0 or step == steps - 1:
            now = time.perf_counter()
            tps = (hist.tokens_seen - tok_last) / max(now - t_last, 1e-9)
            v = evaluate(model, val, block, max_tokens=eval_tokens, bos=bos) if val is not None else None
            model.train()
            hist.records.append(TrainRecord(step + 1, running, v, tps, cur_lr))
            bar.set_postfix(loss=f"{running:.3f}", val=f"{v:.3f}" if v is not None else "-", tok_s=f"{tps:,.0f}")
            t_last, tok_last = time.perf_counter(), hist.tokens_seen
    bar.close()
    model.eval()
    hist.wall_s = time.perf_counter() - t0
    return hist
