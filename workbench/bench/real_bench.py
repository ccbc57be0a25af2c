"""``python -m workbench.bench real``: the AttentionLab on a GPT-2-small-sized HF model (124M parameters, random).

Each measurement runs in a fresh subprocess, so that its peak resident memory (``ru_maxrss``) is its own: the
worker builds a random ``GPT2LMHeadModel`` (12 layers x 12 heads, width 768, vocabulary 50,257: 124M parameters
at 1,024 positions) directly in the weights' dtype (float32 or bfloat16, no float32 copy on the way), wraps it
with ``from_hf`` and a small byte-level BPE trained on the docs corpus (the model's vocabulary is padded beyond
it, as real checkpoints are), then times:

* open: ``AttentionLab(model, text)`` until it is drawn (one forward pass with hooked q/k/v, every head's
  metrics, the overview, the first head's image and the next-token distribution); forward and metrics are also
  timed alone;
* click: ``lab.select(layer, head)`` (the head's image built blockwise + the bokeh update), median of 5.

The goals (Binder's 2 GB): 1,024 tokens open in under 3 s with a peak RSS under 1.2 GB. The long row prints the
cost at 8,192 tokens (``n_positions`` 8,192). Nothing is downloaded.

Lesson: ``notebooks/02_attention.ipynb``.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import time

from .measure import peak_mb, rss_mb, run_worker, serve_worker, worker_parser

GOAL_OPEN_S = 3.0
GOAL_PEAK_GB = 1.2
GOAL_T = 1024
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257)


@functools.lru_cache(maxsize=None)
def bpe_tokenizer(vocab_size: int = 512, chars: int = 60_000):
    """A byte-level BPE trained with HF ``tokenizers`` on the start of the docs corpus, as a
    ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from workbench.data import load_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([load_corpus("python-docs")[:chars]], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def build_model(dtype: str, n_positions: int, shape: dict | None = None, seed: int = 0):
    """A random GPT-2 of ``shape`` (default GPT-2 small) created directly in ``dtype``, wrapped with ``from_hf``."""
    import torch
    import transformers

    from workbench.models import from_hf

    td = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    cfg = transformers.GPT2Config(n_positions=n_positions, **(shape or GPT2_SMALL))
    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    torch.set_default_dtype(td)
    try:
        hf = transformers.GPT2LMHeadModel(cfg)
    finally:
        torch.set_default_dtype(before)
    return from_hf(hf.eval(), bpe_tokenizer(), dtype=dtype)


def text_of(model, T: int) -> str:
    """A docs text that the model's tokenizer encodes to exactly ``T`` tokens (or as close as the corpus allows)."""
    from workbench.data import load_corpus

    tok = model.tokenizer
    ids = tok.encode(load_corpus("python-docs")[: 6 * T])[:T]
    text = tok.decode(ids)
    while len(tok.encode(text)) > T:  # a cut inside a merge can re-encode longer: drop trailing characters
        text = text[:-1]
    return text


def worker(spec: dict) -> dict:
    """One measurement (run in its own process): build, open the lab, click; times in seconds, memory in MB."""
    import torch

    torch.set_num_threads(spec.get("threads", 2))
    from workbench.attention import AttentionProbe, head_metrics
    from workbench.attention.view import probe_head_view

    r: dict = dict(spec, pid=os.getpid())
    r["rss_start_mb"] = rss_mb()
    t0 = time.perf_counter()
    model = build_model(spec["dtype"], spec["n_positions"], spec.get("shape"))
    r["build_s"] = time.perf_counter() - t0
    r["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    text = text_of(model, spec["T"])
    import gc

    gc.collect()
    r["rss_model_mb"] = rss_mb()
    L, H = model.config.n_layer, model.config.n_head
    if spec.get("widget", True):
        from widgets.attention_lab import AttentionLab

        t0, c0 = time.perf_counter(), time.process_time()
        lab = AttentionLab(model, text, debounce=0)
        r["open_s"] = time.perf_counter() - t0
        r["open_cpu_s"] = time.process_time() - c0
        r["T"] = lab.probe.T
        r["rss_open_mb"] = rss_mb()
        times = []
        for layer, head in [(L - 1, H - 1), (0, 1), (L // 2, H // 2), (1, 0), (L - 2, 2)]:
            lab.select(layer, head)
            times.append(lab.timings["select"])
        r["click_s"] = statistics.median(times)
        r["peak_open_mb"] = peak_mb()  # the lab opened and clicked: what a Binder session needs
        probe = lab.probe
    else:
        probe = None
    # the two parts of opening, alone (the lab's probe is dropped first so that they do not add up in memory)
    del probe
    if spec.get("widget", True):
        del lab
    gc.collect()
    t0 = time.perf_counter()
    probe = AttentionProbe(model, text)
    r["forward_s"] = time.perf_counter() - t0
    r["T"] = probe.T
    t0 = time.perf_counter()
    head_metrics(probe)
    r["metrics_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe_head_view(probe, L - 1, H - 1, max_side=512)
    r["view_s"] = time.perf_counter() - t0
    r["peak_mb"] = peak_mb()
    return r


def run_one(spec: dict, timeout: float = 1800) -> dict:
    """Run :func:`worker` in a fresh interpreter and return its result (or ``{"error": ...}``)."""
    return run_worker("workbench.bench.real_bench", spec, timeout)


def _verdict(r: dict) -> str:
    if "error" in r:
        return "error"
    if r["T"] != GOAL_T or "open_s" not in r:
        return "-"
    ok_t = r["open_s"] < GOAL_OPEN_S
    ok_m = r["peak_open_mb"] / 1024 < GOAL_PEAK_GB
    return ("met" if ok_t and ok_m else "NOT met") + f" (open {'<' if ok_t else '>='} {GOAL_OPEN_S:.0f} s, " \
        f"peak {'<' if ok_m else '>='} {GOAL_PEAK_GB} GB)"


def report(rows: list[dict]) -> str:
    out = []
    hdr = (f"{'dtype':>8} | {'T':>5} | {'params':>6} | {'open':>7} | {'forward':>7} | {'metrics':>7} | "
           f"{'click':>6} | {'model RSS':>9} | {'peak RSS':>8} | {'peak all':>8} | goal (T={GOAL_T}: open < {GOAL_OPEN_S:.0f} s, "
           f"peak < {GOAL_PEAK_GB} GB)")
    out.append(hdr)
    out.append("-" * len(hdr))
    for r in rows:
        if "error" in r:
            out.append(f"{r['dtype']:>8} | {r['T']:>5} | error: {r['error']}")
            continue
        opn = f"{r['open_s']:6.2f}s" if "open_s" in r else f"{'-':>7}"
        click = f"{r['click_s'] * 1e3:4.0f}ms" if "click_s" in r else f"{r['view_s'] * 1e3:4.0f}ms"
        out.append(f"{r['dtype']:>8} | {r['T']:>5} | {r['params_m']:5.0f}M | {opn} | {r['forward_s']:6.2f}s | "
                   f"{r['metrics_s']:6.2f}s | {click} | {r['rss_model_mb'] / 1024:7.2f}GB | "
                   f"{r.get('peak_open_mb', float('nan')) / 1024:6.2f}GB | {r['peak_mb'] / 1024:6.2f}GB | "
                   f"{_verdict(r)}")
    out.append("open: AttentionLab(model, text) until drawn; forward: one pass with hooked q/k/v; metrics: every "
               "head, blockwise; click: lab.select (median of 5; without the widget: the head image alone).")
    out.append("model RSS: the process after building the model (interpreter, torch, transformers and weights); "
               "peak RSS: ru_maxrss once the lab is open and clicked (the goal); peak all: after the forward and "
               "metrics were also run alone; each row in its own process.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = worker_parser("python -m workbench.bench real", __doc__)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024], help="Binder rows (n_positions 1,024)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--long", type=int, default=8192, help="the long row's T (n_positions = T); 0 skips it")
    ap.add_argument("--long-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--long-widget", action="store_true", help="open the widget at the long length too")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: a Binder session's guaranteed share is one core; on a shared "
                         "machine 2 threads under contention ran 2-10x slower than 1)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer width-64 model (plumbing check)")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if serve_worker(args, worker):
        return 0
    shape = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=600) if args.tiny else None
    specs = [dict(dtype=d, T=T, n_positions=max(1024, T), threads=args.threads, shape=shape)
             for d in args.dtypes for T in args.lengths]
    if args.long:
        specs.append(dict(dtype=args.long_dtype, T=args.long, n_positions=args.long, threads=args.threads,
                          shape=shape, widget=args.long_widget))
    print(f"AttentionLab on a random GPT-2 ({'tiny' if args.tiny else '124M, GPT-2 small shape'}), one fresh "
          f"process per row, torch threads {args.threads}", flush=True)
    rows = []
    for s in specs:
        r = run_one(s)
        rows.append(r)
        print(f"  {s['dtype']} T={s['T']}: " + ("error " + str(r["error"]) if "error" in r else
              f"open {r.get('open_s', float('nan')):.2f} s, forward {r['forward_s']:.2f} s, metrics "
              f"{r['metrics_s']:.2f} s, peak {r.get('peak_open_mb', r['peak_mb']):.0f} MB"), flush=True)
    print()
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
