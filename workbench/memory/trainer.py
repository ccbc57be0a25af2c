"""The memory lab's training loop and model builder.

:func:`workbench.models.train` trains next-token prediction on every token of random windows of one long id
sequence; these tasks need fresh structured rows per batch and a loss on the answer tokens only, so this module
holds a small loop of its own on top of the model interface (``model(ids).logits``): AdamW with the same warm-up
and cosine schedule (:func:`workbench.models.training.lr_at`), cross-entropy that ignores :data:`~.tasks.IGNORE`
targets, and three callbacks for a live front end: ``progress(done, total)`` every step, ``should_stop()`` before
every step, and ``report(checkpoint)`` with each checkpoint's measurements as it arrives.

:func:`build_model` makes the two architectures every experiment compares: ``"transformer"`` (a RoPE TinyGPT) and
``"recurrent"`` (:class:`workbench.models.recurrent.RecurrentLM`, whose fixed-size state is what the recall gap
is about).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..models.training import apply_gradients, set_lr, training_setup
from .errors import ModelCapabilityError, SequenceTooLongError, TaskRangeError
from .tasks import IGNORE, TaskBatch

ARCHITECTURES = ("transformer", "recurrent")
#: Initialisations :func:`build_model` offers: ``"gpt2"`` (the models' own: every weight ``N(0, 0.02)``, output
#: head tied to the token embedding) and ``"torch"`` (PyTorch's layer defaults: Linear Kaiming-uniform, about
#: ``U(+-1/sqrt(fan_in))``, embeddings ``N(0, 1)``, an untied output head). At width 64 GPT-2's 0.02 (chosen for
#: width 768) makes attention scores and the token's own embedding tiny next to what the layers add, and the recall
#: experiment's lookup (an induction head) then sat on a plateau for 12,000 steps; with ``"torch"`` the same
#: TinyGPT learns it within 1,000 (see :mod:`.recall`).
INITS = ("gpt2", "torch")


def build_model(arch: str, vocab_size: int, block_size: int, *, width: int = 64, n_layer: int = 2,
                state_size: int | None = None, seed: int = 0, init: str = "gpt2"):
    """A fresh model seeded with ``seed``: ``"transformer"`` is a TinyGPT (``n_layer`` blocks of ``width``, 4 heads,
    RoPE); ``"recurrent"`` a RecurrentLM (gated linear attention) of the same width, depth and
    head count whose ``state_size`` is its key dimension per head (``d_state``: each head keeps a
    ``(d_state, width / 4)`` matrix, :func:`state_numbers` counts them; default: the recurrent model's own). The model remembers ``block_size``, the longest row it
    is trained on, as ``trained_length``. ``init`` (:data:`INITS`): ``"gpt2"``, the models' own; ``"torch"``, the
    same architecture with an untied output head, every Linear and Embedding re-drawn with PyTorch's defaults (after
    the models' own draws, from the same seeded generator)."""
    if arch not in ARCHITECTURES:
        raise ModelCapabilityError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")
    if init not in INITS:
        raise TaskRangeError(f"unknown initialisation {init!r}; choose from {INITS}")
    for name, v in (("vocab_size", vocab_size), ("block_size", block_size), ("width", width), ("n_layer", n_layer)):
        if not isinstance(v, int) or v < 1:
            raise TaskRangeError(f"{name} must be a positive int, got {v!r}")
    torch.manual_seed(seed)
    if arch == "transformer":
        if state_size is not None:
            raise ModelCapabilityError("a transformer has no fixed state size (its KV cache grows with the "
                                       "sequence): give state_size only for the recurrent model")
        from ..models import GPTConfig, TinyGPT

        model = TinyGPT(GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=4, n_embd=width,
                                  block_size=block_size, pos="rope", tied=init == "gpt2"), name="memory-transformer")
    else:
        model = _recurrent(vocab_size, block_size, width, n_layer, state_size, tied=init == "gpt2")
    if init == "torch":
        _torch_init(model)
    model.trained_length = block_size
    return model


@torch.no_grad()
def _torch_init(model) -> None:
    """Re-draw every Linear (Kaiming-uniform weight and bias) and Embedding (``N(0, 1)``) with PyTorch's defaults,
    in module order; LayerNorms keep ones and zeros."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            m.reset_parameters()


def _recurrent(vocab_size, block_size, width, n_layer, state_size, tied=True):
    try:
        from ..models.recurrent import RecurrentConfig, RecurrentLM
    except ImportError as exc:  # the recurrent model is written by another issue
        raise ModelCapabilityError(f"the recurrent model is not available here ({exc})") from None
    from dataclasses import fields

    names = {f.name for f in fields(RecurrentConfig)}
    kw = {"vocab_size": vocab_size, "n_layer": n_layer, "n_embd": width, "n_head": 4}
    if "tied" in names:
        kw["tied"] = tied
    if "block_size" in names:
        kw["block_size"] = block_size
    if state_size is not None:
        key = next((k for k in ("state_size", "d_state", "n_state") if k in names), None)
        if key is None:
            raise ModelCapabilityError(f"RecurrentConfig has no state size field (fields: {sorted(names)})")
        if not isinstance(state_size, int) or state_size < 1:
            raise TaskRangeError(f"state_size must be a positive int, got {state_size!r}")
        kw[key] = state_size
    return RecurrentLM(RecurrentConfig(**kw))


def state_numbers(model) -> int | None:
    """How many numbers the model keeps per layer between tokens when it is recurrent (None for a transformer,
    whose memory is its KV cache and grows with the sequence)."""
    cfg = model.config
    if hasattr(cfg, "d_state"):  # gated linear attention: per head a (d_state, head_dim) matrix
        return int(cfg.d_state) * int(cfg.n_embd)
    return None


def check_length(model, batch: TaskBatch) -> None:
    """Raise :class:`SequenceTooLongError` when ``batch`` is longer than what ``model`` was trained on."""
    limit = getattr(model, "trained_length", None) or getattr(model.config, "block_size", None)
    T = batch.x.shape[1]
    if limit is not None and T > limit:
        raise SequenceTooLongError(f"rows of {T} tokens are longer than the {limit} this model was trained on: "
                                   "evaluate it on settings no longer than its training task's")
    V = model.config.vocab_size
    top = int(batch.x.max())
    if top >= V:
        raise ModelCapabilityError(f"the task uses token {top} but the model's vocabulary has {V} tokens: "
                                   "build the model for this task's vocabulary")


@torch.no_grad()
def predictions(model, batch: TaskBatch, chunk: int = 256) -> torch.Tensor:
    """Greedy next-token predictions ``(B, T)`` (argmax of the logits) of ``model`` on ``batch.x``."""
    check_length(model, batch)
    was = model.training
    model.eval()
    out = torch.cat([model(batch.x[i:i + chunk]).logits.argmax(-1) for i in range(0, len(batch.x), chunk)])
    model.train(was)
    return out


def masked_loss(model, batch: TaskBatch) -> torch.Tensor:
    """Mean cross-entropy (nats) over the scored positions of ``batch``."""
    logits = model(batch.x).logits
    return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)


@dataclass
class Checkpoint:
    """One checkpoint: after ``step`` steps, the running training loss and what ``evaluate`` returned."""

    step: int
    train_loss: float
    metrics: object = None


@dataclass
class TrainLog:
    """What :func:`train_masked` returns: the checkpoints in order, the steps actually run, CPU and wall seconds,
    and whether ``should_stop`` cut the run short."""

    checkpoints: list = field(default_factory=list)
    steps: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    stopped: bool = False

    @property
    def final_loss(self) -> float:
        return self.checkpoints[-1].train_loss if self.checkpoints else float("nan")


def train_masked(model, sample, steps: int, *, lr: float = 3e-3, weight_decay: float = 0.1, grad_clip: float = 1.0,
                 seed: int = 0, every: int | None = None, evaluate=None, progress=None, should_stop=None,
                 report=None) -> TrainLog:
    """Train ``model`` for ``steps`` steps on ``sample(rng) -> TaskBatch`` (``rng`` a numpy Generator seeded with
    ``seed``), loss on the scored positions only. Every ``every`` steps (and at the end) a :class:`Checkpoint`
    holds the running loss and ``evaluate(model)``; ``report(checkpoint)`` gets it at once. ``progress(done,
    total)`` after every step; ``should_stop()`` before every step ends the run early (the last checkpoint is
    still taken). Same seed, same thread count: same weights."""
    if not isinstance(steps, int) or steps < 1:
        raise TaskRangeError(f"steps must be a positive int, got {steps!r}")
    every = every or max(1, steps // 10)
    rng = np.random.default_rng(seed)  # the tasks sample with NumPy; training_setup's generator goes unused
    opt, _ = training_setup(model, seed, lr, weight_decay)
    warmup = max(1, steps // 20)
    log = TrainLog()
    c0, t0 = time.process_time(), time.perf_counter()
    running = None

    def checkpoint(step):
        ck = Checkpoint(step, float(running), evaluate(model) if evaluate is not None else None)
        model.train()
        log.checkpoints.append(ck)
        if report is not None:
            report(ck)

    model.train()
    for step in range(steps):
        if should_stop is not None and should_stop():
            log.stopped = True
            break
        set_lr(opt, step, steps, lr, warmup)
        batch = sample(rng)
        if step == 0:
            check_length(model, batch)
        running = apply_gradients(model, opt, masked_loss(model, batch), grad_clip, running)
        log.steps = step + 1
        if progress is not None:
            progress(step + 1, steps)
        if (step + 1) % every == 0 and step + 1 < steps:
            checkpoint(step + 1)
    if running is not None and (not log.checkpoints or log.checkpoints[-1].step != log.steps):
        checkpoint(log.steps)
    model.eval()
    log.cpu_s, log.wall_s = time.process_time() - c0, time.perf_counter() - t0
    return log


def run_settings(settings, steps: int, run_one, cfg: dict, *, key=lambda s: s.label, keep_partial: bool = True,
                 progress=None, should_stop=None, report=None) -> list[dict]:
    """Train and measure each setting in turn with ``run_one(setting, cfg, progress, should_stop, report)``, the
    live experiments' shared loop: ``progress(done, total)`` counts steps over all settings, ``report(key(setting),
    checkpoint)`` gets each checkpoint as it arrives, and a stop (``should_stop()`` before a model, or a model cut
    short) ends the loop after the current model. ``keep_partial``: keep a model cut short (its checkpoints so far)."""
    runs, total = [], steps * len(settings)
    for i, s in enumerate(settings):
        if should_stop is not None and should_stop() and runs:
            break
        prog = None if progress is None else (lambda d, t, i=i: progress(i * steps + d, total))
        rep = None if report is None else (lambda ck, s=s: report(key(s), ck))
        r = run_one(s, cfg, prog, should_stop, rep)
        if r["steps"] < steps:
            if keep_partial:
                runs.append(r)
            break
        runs.append(r)
    return runs
