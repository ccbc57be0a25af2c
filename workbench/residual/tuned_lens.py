"""The tuned lens (Belrose et al. 2023): one learned affine translator per layer boundary before the logit lens.

The logit lens reads an intermediate residual stream as if it were the last one, but early layers use a different
basis, so their logit-lens distributions are poor (high KL to the model's output). The tuned lens fits, for each
boundary ``l < L``, ``h -> h + A_l h + b_l`` (``A_l``, ``b_l`` start at zero: the identity, i.e. the logit lens)
to minimise KL(final || lens) with the model frozen, then applies the model's own final norm and unembedding.
The last boundary keeps the identity (it *is* the model's output).

A lens is saved as ``tuned_lens.safetensors`` (``A`` ``(L, D, D)``, ``b`` ``(L, D)``) + ``tuned_lens.json``
(shapes, the :func:`model_hash` of the model it was trained for, training metadata) next to the model; loading it
for another model raises :class:`~workbench.residual.errors.LensMismatchError`. The shipped models' lenses are
remade by ``python -m workbench.residual.make_lenses``.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..atomic import write_bytes_atomic
from ..models.layout import layout_of
from .errors import LensMismatchError, ResidualError
from .run import _device, head_of, residual_stack

LENS_WEIGHTS, LENS_JSON = "tuned_lens.safetensors", "tuned_lens.json"
FORMAT, VERSION = "workbench-tuned-lens", 1
_HASH_SAMPLE = 1 << 16  # at most this many (evenly strided) values of each hashed tensor


def _shape_of(model) -> dict:
    lay = layout_of(model)
    return {"model_class": lay.model_class, "n_layer": lay.n_layer, "d_model": lay.d_model,
            "vocab_size": int(model.config.vocab_size)}


@torch.no_grad()
def model_hash(model) -> str:
    """A sha256 (hex) that identifies a model's weights: its class and shape, the unembedding, the final norm, the
    embedding and every block's parameters (each as float32, at most ``2**16`` evenly strided values per tensor so
    large models hash in well under a second). Stable across loads; any retraining changes it."""
    lay = layout_of(model)
    h = hashlib.sha256(json.dumps(_shape_of(model), sort_keys=True).encode())
    mods = [("unembed", lay.unembed), ("final_norm", lay.final_norm), ("embed", lay.embed)]
    mods += [(f"blocks.{i}", blk) for i, blk in enumerate(lay.blocks)]
    for prefix, mod in mods:
        if mod is None:
            continue
        for name, p in mod.named_parameters():
            flat = p.detach().reshape(-1)
            if flat.numel() > _HASH_SAMPLE:
                flat = flat[:: math.ceil(flat.numel() / _HASH_SAMPLE)]
            h.update(f"{prefix}.{name}{tuple(p.shape)}".encode())
            h.update(flat.float().cpu().numpy().tobytes())
    return h.hexdigest()


class TunedLens(nn.Module):
    """Affine translators ``h + A_l h + b_l`` for the boundaries ``l = 0 .. L - 1`` (``A`` ``(L, D, D)``, ``b``
    ``(L, D)``), for one model (``model_hash``). A fresh lens is the identity (the logit lens)."""

    def __init__(self, n_layer: int, d_model: int, *, model_hash: str = "", model_class: str = "",
                 vocab_size: int = 0, meta: dict | None = None):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(n_layer, d_model, d_model))
        self.b = nn.Parameter(torch.zeros(n_layer, d_model))
        self.n_layer, self.d_model, self.vocab_size = int(n_layer), int(d_model), int(vocab_size)
        self.model_hash, self.model_class = model_hash, model_class
        self.meta: dict = dict(meta or {})

    @classmethod
    def for_model(cls, model, meta: dict | None = None) -> "TunedLens":
        """The identity lens for ``model`` (on its device)."""
        s = _shape_of(model)
        lens = cls(s["n_layer"], s["d_model"], model_hash=model_hash(model), model_class=s["model_class"],
                   vocab_size=s["vocab_size"], meta=meta)
        return lens.to(_device(model))

    # -- applying ------------------------------------------------------------------------------------------------

    def translate(self, resid: torch.Tensor) -> torch.Tensor:
        """A residual stack ``(L + 1, ..., D)`` with boundaries ``0 .. L - 1`` translated; the last is returned
        unchanged (the identity). Differentiable in ``A`` and ``b``."""
        if resid.size(0) != self.n_layer + 1 or resid.size(-1) != self.d_model:
            raise LensMismatchError(f"this lens needs a residual stack of shape (L + 1 = {self.n_layer + 1}, ..., "
                                    f"D = {self.d_model}), got {tuple(resid.shape)}")
        return torch.cat([self.translate_layers(resid[:-1]), resid[-1:]])

    def translate_layers(self, h: torch.Tensor) -> torch.Tensor:
        """``(L, ..., D)`` -> ``(L, ..., D)``: boundary ``l`` mapped by ``h + h A_l^T + b_l``."""
        flat = h.reshape(h.size(0), -1, h.size(-1)).to(self.A.dtype)
        out = flat + torch.einsum("lnd,led->lne", flat, self.A) + self.b[:, None, :]
        return out.reshape(h.shape)

    def check_shapes(self, model) -> None:
        """:class:`LensMismatchError` if ``model``'s class, depth, width or vocabulary differ from the lens's."""
        self._check(model, with_hash=False)

    def check(self, model) -> None:
        """:class:`LensMismatchError` naming what differs if this lens was trained for another model (class,
        shapes or :func:`model_hash`)."""
        self._check(model, with_hash=True)

    def _check(self, model, with_hash: bool) -> None:
        theirs = _shape_of(model)
        mine = {"model_class": self.model_class, "n_layer": self.n_layer, "d_model": self.d_model,
                "vocab_size": self.vocab_size}
        diffs = [f"{k} {mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
        if with_hash and not diffs:
            h = model_hash(model)
            if self.model_hash != h:
                diffs.append(f"model hash {self.model_hash[:12]}... vs {h[:12]}... (same shapes, other weights)")
        if diffs:
            raise LensMismatchError(
                "this tuned lens was trained for another model (lens vs this model): " + "; ".join(diffs)
                + ". Train one for this model with train_tuned_lens(model, corpus_ids) or load the lens saved "
                "next to it")

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, folder, dtype: torch.dtype = torch.float32) -> Path:
        """Write ``tuned_lens.safetensors`` (tensors stored as ``dtype``; float16 halves the file) and
        ``tuned_lens.json`` into ``folder`` (created if needed), each atomically; returns the JSON's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in (("A", self.A), ("b", self.b))}
        doc = {"format": FORMAT, "version": VERSION, "model_hash": self.model_hash, "model_class": self.model_class,
               "n_layer": self.n_layer, "d_model": self.d_model, "vocab_size": self.vocab_size,
               "dtype": str(dtype).removeprefix("torch."), "meta": self.meta}
        write_bytes_atomic(folder / LENS_WEIGHTS, st_save(tensors))
        write_bytes_atomic(folder / LENS_JSON, (json.dumps(doc, indent=2) + "\n").encode())
        return folder / LENS_JSON

    @classmethod
    def load(cls, folder, model) -> "TunedLens":
        """The lens saved in ``folder``, as float32 on ``model``'s device, after checking it was trained for
        ``model`` (:class:`LensMismatchError` naming what differs otherwise)."""
        folder = Path(folder)
        if not (folder / LENS_JSON).is_file() or not (folder / LENS_WEIGHTS).is_file():
            raise FileNotFoundError(f"no tuned lens in {folder} (need {LENS_JSON} and {LENS_WEIGHTS})")
        doc = json.loads((folder / LENS_JSON).read_text())
        if doc.get("format") != FORMAT:
            raise ResidualError(f"{folder / LENS_JSON} is not a tuned lens (format {doc.get('format')!r})")
        try:
            tensors = st_load((folder / LENS_WEIGHTS).read_bytes())
        except SafetensorError as e:
            raise ResidualError(f"{folder / LENS_WEIGHTS} is not a readable safetensors file: {e}") from None
        L, D = int(doc["n_layer"]), int(doc["d_model"])
        if tuple(tensors["A"].shape) != (L, D, D) or tuple(tensors["b"].shape) != (L, D):
            raise LensMismatchError(f"{folder}: the tensors' shapes {tuple(tensors['A'].shape)}, "
                                    f"{tuple(tensors['b'].shape)} do not match the JSON's n_layer={L}, d_model={D}")
        lens = cls(L, D, model_hash=doc["model_hash"], model_class=doc["model_class"],
                   vocab_size=int(doc["vocab_size"]), meta=doc.get("meta"))
        lens.check(model)
        with torch.no_grad():
            lens.A.copy_(tensors["A"].float())
            lens.b.copy_(tensors["b"].float())
        return lens.to(_device(model))


# -- training --------------------------------------------------------------------------------------------------------

def windows(model, ids, seq_len: int, starts) -> torch.Tensor:
    """``(len(starts), seq_len)`` windows of a 1-D id sequence, each starting with the tokenizer's BOS when it has
    one (as the model was trained), then ``seq_len - 1`` (or ``seq_len``, without a BOS) ids from each start."""
    bos = getattr(getattr(model, "tokenizer", None), "bos_id", None)
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    n = seq_len - (bos is not None)
    rows = [ids[s:s + n] for s in starts]
    out = torch.stack(rows)
    if bos is not None:
        out = torch.cat([torch.full((out.size(0), 1), bos, dtype=torch.long), out], dim=1)
    return out


def _corpus(model, corpus_ids, seq_len: int) -> torch.Tensor:
    ids = torch.as_tensor(corpus_ids, dtype=torch.long).reshape(-1)
    bos = getattr(getattr(model, "tokenizer", None), "bos_id", None)
    if bos is not None and ids.numel() and int(ids[0]) == bos:
        ids = ids[1:]  # text encoded with the BOS in front: every window gets its own BOS instead
    if ids.numel() < seq_len:
        raise ResidualError(f"the corpus has {ids.numel()} tokens: need at least seq_len={seq_len}")
    return ids


def lens_loss(model, lens: TunedLens, x: torch.Tensor) -> torch.Tensor:
    """Mean over positions, summed over the translated boundaries, of KL(final || tuned lens) in nats, for a
    ``(B, T)`` batch of ids; differentiable in the lens only (the model's run is not)."""
    with torch.no_grad():
        rs = residual_stack(model, x)
        final_lp = torch.log_softmax(rs.logits, dim=-1)  # (B, T, V)
    lp = torch.log_softmax(head_of(model)(lens.translate_layers(rs.resid[:-1])), dim=-1)  # (L, B, T, V)
    return (final_lp.exp() * (final_lp - lp)).sum(-1).mean(dim=(1, 2)).sum()


def train_tuned_lens(model, corpus_ids, steps: int = 300, lr: float = 3e-3, seq_len: int = 128,
                     batch_size: int = 8, seed: int = 0, progress: Callable | None = None) -> TunedLens:
    """Fit a :class:`TunedLens` for ``model`` (frozen, in eval mode) on random windows of ``corpus_ids`` (1-D):
    Adam on KL(final || lens) summed over boundaries, learning rate decaying linearly to zero over ``steps``.
    ``progress(step, steps, loss)`` is called after each step. Deterministic for a given ``seed``."""
    if steps < 1 or batch_size < 1 or seq_len < 2:
        raise ResidualError(f"need steps >= 1, batch_size >= 1, seq_len >= 2; got {steps}, {batch_size}, {seq_len}")
    seq_len = min(int(seq_len), int(model.config.block_size))
    ids = _corpus(model, corpus_ids, seq_len)
    n = seq_len - (getattr(getattr(model, "tokenizer", None), "bos_id", None) is not None)
    root = layout_of(model).root
    head_of(model)  # find (and check) the head before anything changes
    flags = [(p, p.requires_grad) for p in root.parameters()]
    was_training = root.training
    t0 = time.perf_counter()
    lens = TunedLens.for_model(model)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    dev = _device(model)
    loss = torch.tensor(float("nan"))
    try:
        root.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for step in range(steps):
            starts = torch.randint(0, ids.numel() - n + 1, (batch_size,), generator=gen).tolist()
            loss = lens_loss(model, lens, windows(model, ids, seq_len, starts).to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress(step + 1, steps, float(loss.detach()))
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        root.train(was_training)
    lens.meta.update({"steps": steps, "lr": lr, "seq_len": seq_len, "batch_size": batch_size, "seed": seed,
                      "final_loss_nats": float(loss.detach()), "train_s": round(time.perf_counter() - t0, 2)})
    return lens.requires_grad_(False)


def load_tuned_lens(model_or_name) -> TunedLens | None:
    """The shipped tuned lens of a shipped model, given by name (``"docs-byte"``) or as the loaded model (found by
    :func:`model_hash`); None when there is none. An unknown name is a :class:`ResidualError`."""
    from ..models.pretrained import PRETRAINED_DIR, available, load_pretrained

    if isinstance(model_or_name, str):
        names = available()
        if model_or_name not in names:
            raise ResidualError(f"no shipped model named {model_or_name!r} (available: {names})")
        folder = PRETRAINED_DIR / model_or_name
        if not (folder / LENS_JSON).is_file():
            return None
        return TunedLens.load(folder, load_pretrained(model_or_name))
    model = model_or_name
    h = model_hash(model)
    for name in available():
        f = PRETRAINED_DIR / name / LENS_JSON
        if f.is_file() and json.loads(f.read_text()).get("model_hash") == h:
            return TunedLens.load(f.parent, model)
    return None
