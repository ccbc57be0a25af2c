"""Watch induction heads form: train a small attention-only TinyGPT on repeated random sequences, with checkpoints.

Each batch holds fresh sequences ``x x`` (``n`` random tokens, then the same ``n`` again; ``n`` varies by step). The first copy is
unpredictable; the second is predictable only by looking back to the token after the previous occurrence of the
current one, which needs a previous-token head in layer 0 feeding an induction head in layer 1 (Olsson et al.
2022). At every checkpoint the induction score of each head ``(L, H)`` is measured on a fixed held-out sequence.

Lesson: ``notebooks/02_attention.ipynb`` (2 · Induction heads form during training).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .capture import capture_attention
from .metrics import induction_score, previous_token_score, repeated_random_ids


@dataclass
class InductionRun:
    """Checkpoints of one training run.

    ``steps`` ``(n,)``; ``induction`` and ``previous_token`` ``(n, L, H)`` on ``eval_ids`` ``(2 * length,)``;
    ``loss_first`` / ``loss_second`` ``(n,)``: mean loss (nats) on the first and the repeated half of the
    evaluation batch; ``states``: the model's ``state_dict`` at each checkpoint (load with :meth:`model_at`).
    """

    model: object
    steps: np.ndarray
    induction: np.ndarray
    previous_token: np.ndarray
    loss_first: np.ndarray
    loss_second: np.ndarray
    eval_ids: np.ndarray
    states: list = field(default_factory=list)
    seconds: float = 0.0

    def model_at(self, i: int):
        """A copy of the model with checkpoint ``i``'s weights."""
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.states[i])
        return m.eval()

    def best_head(self) -> tuple[int, int]:
        """The (layer, head) with the highest final induction score."""
        L, H = self.induction.shape[1:]
        return tuple(int(x) for x in divmod(int(self.induction[-1].argmax()), H))


def _batch(n: int, length: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    first = torch.randint(0, vocab, (n, length), generator=gen)
    return torch.cat([first, first], dim=1)


def _varied_batch(batch: int, min_length: int, length: int, vocab: int, gen: torch.Generator):
    """Rows ``r x x r'`` of ``2 * length`` random tokens: a period ``n`` in ``[min_length, length]`` and a prefix
    length drawn per row, so neither a fixed relative offset nor an absolute position finds the answer. Targets
    are -1 (ignored) except on the repeated copy."""
    x = torch.randint(0, vocab, (batch, 2 * length), generator=gen)
    target = torch.full_like(x, -1)
    ns = torch.randint(min_length, length + 1, (batch,), generator=gen).tolist()
    for b, n in enumerate(ns):
        p = int(torch.randint(0, 2 * length - 2 * n + 1, (1,), generator=gen))
        x[b, p + n : p + 2 * n] = x[b, p : p + n]
        target[b, p + n : p + 2 * n] = x[b, p + n : p + 2 * n]
    return x, target


def train_induction(steps: int = 1000, every: int = 50, length: int = 24, vocab: int = 64, n_layer: int = 2,
                    n_head: int = 4, n_embd: int = 64, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                    pos: str = "rope", min_length: int = 8) -> InductionRun:
    """Train an attention-only TinyGPT on repeated random sequences; checkpoint every ``every`` steps.

    Each row draws its period ``n`` in ``[min_length, length]`` and where the repeat starts: with one fixed
    period a head could reach the induction target by relative position alone, and with the repeat always at the
    start a learned-position model finds it by halving its position (both seen here), without looking at tokens.
    """
    from workbench.models import GPTConfig, TinyGPT

    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=2 * length,
                    pos=pos, attn_only=True)
    model = TinyGPT(cfg, name=f"induction-{n_layer}L")
    gen = torch.Generator().manual_seed(seed)
    eval_gen = torch.Generator().manual_seed(seed + 1)
    eval_batch = _batch(64, length, vocab, eval_gen)
    eval_ids = repeated_random_ids(length, vocab=vocab, seed=seed + 2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rec = dict(steps=[], induction=[], previous_token=[], loss_first=[], loss_second=[], states=[])
    t0 = time.perf_counter()

    def checkpoint(step):
        model.eval()
        with torch.no_grad():
            logits = model(eval_batch).logits
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), eval_batch[:, 1:].reshape(-1),
                                   reduction="none").view(eval_batch.size(0), -1)
        cap = capture_attention(model, eval_ids, value_norms=False)
        rec["steps"].append(step)
        rec["induction"].append(induction_score(cap))
        rec["previous_token"].append(previous_token_score(cap))
        rec["loss_first"].append(float(loss[:, : length - 1].mean()))
        rec["loss_second"].append(float(loss[:, length:].mean()))
        rec["states"].append({k: v.detach().clone() for k, v in model.state_dict().items()})
        model.train()

    model.train()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            checkpoint(step)
        if step == steps:
            break
        x, target = _varied_batch(batch_size, min_length, length, vocab, gen)
        logits = model(x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), target[:, 1:].reshape(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return InductionRun(model, np.array(rec["steps"]), np.stack(rec["induction"]), np.stack(rec["previous_token"]),
                        np.array(rec["loss_first"]), np.array(rec["loss_second"]), eval_ids, rec["states"],
                        time.perf_counter() - t0)
