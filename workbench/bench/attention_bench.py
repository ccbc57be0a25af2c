"""``python -m workbench.bench attention``: capture time and bytes sent to the AttentionLab at T = 256, 1,024, 4,096.

For each length it measures, on the shipped ``docs-byte`` model (or a random model of the same shape when it is
not shipped, which the output says):

* capture: one forward pass with hooked q/k/v (:class:`AttentionProbe`), all per-head metrics computed blockwise
  (query blocks of every head of a layer, :func:`head_metrics`), and one head click (the head's image built from
  query blocks, :func:`~workbench.attention.view.probe_head_view`), in wall-clock ms;
* whether the whole ``(L, H, T, T)`` float32 capture fits the default 512 MB budget;
* bytes the widget sends: the first display (every figure serialised with its data, as ``BokehPane`` sends it
  when the browser first shows it; bokeh gzips arrays there) and one head click once shown (the patch, counted on
  the widget's comm messages: JSON text + binary buffers);
* the same attention serialised as BertViz does (every layer, head, query and key as JSON floats), exact at
  T = 256 and estimated from 64 sampled rows per head above, and the ratio BertViz / widget.

Lesson: ``notebooks/02_attention.ipynb``.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from workbench.attention import AttentionProbe, capture_bytes, dense, head_metrics
from workbench.attention.view import bertviz_json_bytes, probe_head_view


def _model(name: str):
    try:
        from workbench.models import available, load_pretrained

        if name in available():
            return load_pretrained(name), f"shipped {name!r}"
    except Exception as e:  # noqa: BLE001 - report and fall back
        print(f"(could not load {name!r}: {e})")
    from workbench.models import GPTConfig, TinyGPT
    from workbench.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    tok = ByteTokenizer()
    try:
        from workbench.models.make_pretrained import RECIPES

        shape = {k: v for k, v in RECIPES[name]["config"].items() if k != "dropout"}
    except (ImportError, KeyError):
        shape = dict(n_layer=4, n_head=4, n_embd=128, block_size=256, pos="rope")
    cfg = GPTConfig(vocab_size=tok.vocab_size, **shape)
    return TinyGPT(cfg, tok, name="random-docs-byte-shape").eval(), f"RANDOM weights, same shape as {name!r} (not shipped yet)"


class _LazyProbs:
    """``probs[l, h]`` -> ``(T, T)`` from a probe, so BertViz sizes can be measured one head at a time."""

    def __init__(self, probe):
        self.probe = probe
        self.shape = (probe.n_layer, probe.n_head, probe.T, probe.T)

    def __getitem__(self, lh):
        layer, head = lh
        return self.probe.probs(layer, [head])[0].numpy()


def _mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def measure(model, T: int, max_side: int, sample_rows: int, with_widget: bool = True) -> dict:
    from workbench.data import load_corpus

    tok = model.tokenizer
    ids = tok.encode(load_corpus("python-docs")[: 4 * T])[:T]
    if len(ids) < T:
        raise RuntimeError(f"corpus too short for T = {T}")
    ids = torch.tensor(ids)
    policy = dense() if T > model.config.block_size else None
    L, H = model.config.n_layer, model.config.n_head
    row: dict = {"T": T, "policy": policy.name if policy else "none (within context)"}

    t0 = time.perf_counter()
    probe = AttentionProbe(model, ids, policy=policy)
    row["forward_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    head_metrics(probe)
    row["metrics_ms"] = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    view = probe_head_view(probe, L - 1, 0, None, max_side)  # query blocks, never the whole (T, T) pattern
    row["head_click_ms"] = (time.perf_counter() - t0) * 1e3
    row["full_capture_bytes"] = capture_bytes(L, H, T, T)
    row["full_capture_fits_512MB"] = row["full_capture_bytes"] <= 512 * 2**20
    row["head_image_shape"] = list(view.image.shape)

    if with_widget:
        from widgets.attention_lab import AttentionLab

        t0 = time.perf_counter()
        lab = AttentionLab(model, tok.decode(ids.tolist()), policy=policy, debounce=0, max_side=max_side)
        row["widget_build_ms"] = (time.perf_counter() - t0) * 1e3
        if lab.probe is None or lab.probe.T != T:
            raise RuntimeError(f"widget saw {getattr(lab.probe, 'T', None)} tokens, expected {T}")
        # the first display sends each figure serialised with its data (BokehPane re-serialises figures changed
        # before a browser view exists); after that, changes go out as patches, counted on the comm messages
        row["widget_first_bytes"] = lab.first_display_bytes()
        for pane in lab.panes + lab.compare_panes:  # as if the browser now shows every pane
            pane.refresh()
            pane._view_count = 1
        before = lab.bytes_sent
        lab.select(L - 1, H - 1)
        row["widget_click_bytes"] = lab.bytes_sent - before
        row["widget_click_ms"] = lab.timings["select"] * 1e3
    else:  # what the widget would send: one float32 image + (L, H) metrics, no bokeh framing
        row["widget_first_bytes"] = view.image.nbytes + L * H * 8
        row["widget_click_bytes"] = view.image.nbytes

    tokens = [tok.token_str(int(i)) for i in ids]
    exact = T <= 256
    n, est = bertviz_json_bytes(_LazyProbs(probe), tokens, None if exact else sample_rows)
    row["bertviz_json_bytes"] = n
    row["bertviz_estimated"] = est
    row["ratio_first"] = n / row["widget_first_bytes"]
    row["ratio_click"] = n / row["widget_click_bytes"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.bench attention", description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--model", default="docs-byte")
    ap.add_argument("--max-side", type=int, default=512, help="largest image side the widget sends (pixels)")
    ap.add_argument("--sample-rows", type=int, default=64, help="rows per head serialised to estimate BertViz JSON")
    ap.add_argument("--no-widget", action="store_true", help="count payload bytes without building the widget")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is steadier on a shared machine)")
    args = ap.parse_args(argv)

    torch.set_num_threads(max(1, min(args.threads, torch.get_num_threads())))
    model, desc = _model(args.model)
    c = model.config
    print(f"model: {desc}: {c.n_layer} layers x {c.n_head} heads, context {c.block_size}, "
          f"torch threads {torch.get_num_threads()}")
    rows = []
    for T in args.lengths:
        r = measure(model, T, args.max_side, args.sample_rows, with_widget=not args.no_widget)
        rows.append(r)
    print()
    hdr = (f"{'T':>5} | {'forward':>8} | {'metrics':>8} | {'click':>7} | {'full capture':>16} | "
           f"{'widget 1st':>10} | {'per click':>9} | {'BertViz JSON':>14} | {'x 1st':>6} | {'x click':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        fits = "fits" if r["full_capture_fits_512MB"] else "> budget"
        bv = _mb(r["bertviz_json_bytes"]) + ("*" if r["bertviz_estimated"] else "")
        click_ms = r.get("widget_click_ms", r["head_click_ms"])
        print(f"{r['T']:>5} | {r['forward_ms']:>6.0f}ms | {r['metrics_ms']:>6.0f}ms | {click_ms:>5.0f}ms | "
              f"{_mb(r['full_capture_bytes']):>9} {fits:>6} | {_mb(r['widget_first_bytes']):>10} | "
              f"{_mb(r['widget_click_bytes']):>9} | {bv:>14} | {r['ratio_first']:>6.0f} | {r['ratio_click']:>7.0f}")
    print("\nforward: one pass with hooked q/k/v; metrics: 7 per-head metrics, blockwise over queries; click: one "
          "head's image from query blocks (+ bokeh update with the widget).")
    print("widget 1st: the figures serialised with their data (arrays gzipped by bokeh); per click: the patch for "
          "a new head (one float32 image "
          f"of at most {args.max_side}x{args.max_side}).")
    print("BertViz JSON: all L x H x T x T floats as JSON (* = estimated from sampled rows). x: BertViz / widget.")
    print("Beyond the context (T > 256) the RoPE model extrapolates (policy dense); sizes and times do not depend "
          "on that choice.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": desc, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
