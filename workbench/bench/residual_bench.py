"""``python -m workbench.bench residual``: the residual-stream lab against TransformerLens, on the same weights.

A random GPT-2-small-shaped HF model (12 layers x 12 heads, width 768, vocabulary 50,257, built offline) is
measured two ways, each row in its own fresh process so that its peak resident memory (``ru_maxrss``, the whole
process: interpreter, torch, transformers, weights and the work) is its own:

* the logit lens at T = 512: :func:`workbench.residual.lens.logit_lens` (top-5 per layer and position, plus its
  entropy, rank, probability of the final answer and KL statistics) and its core alone (``ours-core``:
  ``residual_stack``, the model's own head, log-softmax and top-5, one layer at a time) against TransformerLens's
  ``run_with_cache`` + ``accumulated_resid`` + ``ln_final`` + ``unembed`` + log-softmax + top-5, one layer at a
  time (the same work as the core);
* a residual-stream patching sweep over all 12 layers x 32 positions (clean and corrupted prompts differ in one
  token, at position 20): :func:`workbench.residual.patching.activation_patching` against
  ``transformer_lens.patching.get_act_patch_resid_pre`` with the same normalised logit difference. Ours runs three
  times: as shipped (``ours``: batches of 16, each starting at the first block it patches, and cells whose
  activation is identical in both runs need no pass), without the skipping (``ours-noskip``), and with batching
  alone (``ours-batch``: whole forward passes of 16 patches).

TransformerLens 4 has no ``HookedTransformer``; its ``TransformerBridge`` wraps the same HF model (no weight
processing, so its numbers are the HF model's). Each row saves its numbers; the report gives time ratios, the
largest difference between the two implementations' numbers, and peak RSS against Binder's 2 GB.

On the shipped ``docs-byte`` model it times what a click in the lab costs: the logit lens, direct logit
attribution and a full residual patching sweep of a short prompt (goal: under 200 ms each). Nothing is downloaded.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time

from .measure import peak_mb, rss_mb, run_worker, serve_worker, worker_parser
from .real_bench import GPT2_SMALL, bpe_tokenizer, text_of

GOAL_RATIO = 2.0
GOAL_PEAK_GB = 2.0
GOAL_CLICK_MS = 200.0
TINY = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=600)


def tl_bridge(hf_model, tokenizer):
    """TransformerLens's ``TransformerBridge`` around an HF model already in memory, with no hub access: its
    tokenizer set-up wants a ``name_or_path`` and reloads a tokenizer that does not add BOS, so a copy is handed
    over that says it already does (ids are passed directly anyway)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformer_lens.model_bridge import TransformerBridge

    tok = copy.deepcopy(tokenizer)
    tok.init_kwargs.update(name_or_path="local", add_bos_token=True)
    arch = type(hf_model.config).model_type
    return TransformerBridge.boot_transformers(arch, hf_model=hf_model, tokenizer=tok).eval()


def build_hf(shape: dict, n_positions: int, seed: int = 0):
    """A random float32 ``GPT2LMHeadModel`` of ``shape`` (eval mode)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_positions=n_positions, **shape)).eval()


def prompts(model, T: int, at: int):
    """Clean ids ``(1, T)`` from the docs corpus and corrupted ids that differ only at position ``at``."""
    import torch

    ids = torch.tensor(model.tokenizer.encode(text_of(model, T)))[:T][None]
    bad = ids.clone()
    bad[0, at] = (int(ids[0, at]) + 7) % model.tokenizer.vocab_size
    return ids, bad


def _tl_patching(bridge, clean, corrupted, answer, wrong):
    import torch
    from transformer_lens import patching

    with torch.no_grad():
        c = bridge(clean)[0, -1]
        x = bridge(corrupted)[0, -1]
        _, cache = bridge.run_with_cache(clean)
    cd, xd = float(c[answer] - c[wrong]), float(x[answer] - x[wrong])

    def metric(logits):
        return (logits[0, -1, answer] - logits[0, -1, wrong] - xd) / (cd - xd)

    with torch.no_grad():
        return patching.get_act_patch_resid_pre(bridge, corrupted, cache, metric).detach().cpu().numpy()


def _tl_lens(bridge, ids, k: int):
    import numpy as np
    import torch

    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids)
        resid = cache.accumulated_resid(incl_mid=False)  # (L + 1, 1, T, D), before ln_final
        del cache
        probs, top = [], []
        for r in resid:
            lp = torch.log_softmax(bridge.unembed(bridge.ln_final(r[0])).double(), -1)
            t = torch.topk(lp, k, -1)
            probs.append(t.values.exp().numpy())
            top.append(t.indices.numpy())
    return np.stack(top), np.stack(probs)


def _core_lens(model, ids, k: int):
    """The logit lens's core alone, the same work as :func:`_tl_lens`: :func:`residual_stack`, then per layer the
    model's own head, log-softmax and top-k (no entropy, rank or KL statistics)."""
    import numpy as np
    import torch

    from workbench.residual.run import head_of, residual_stack

    head = head_of(model)
    with torch.no_grad():
        rs = residual_stack(model, ids)
        probs, top = [], []
        for r in rs.resid[:, 0]:
            t = torch.topk(torch.log_softmax(head(r).double(), -1), k, -1)
            probs.append(t.values.exp().numpy())
            top.append(t.indices.numpy())
    return np.stack(top), np.stack(probs)


def _warm_up(model) -> None:
    """What the lab finds once per model (layout, head, post-attention norms), found before timing."""
    from workbench.residual.linear_norm import post_attention_norms
    from workbench.residual.run import head_of

    head_of(model)
    post_attention_norms(model)


def worker(spec: dict) -> dict:
    """One measurement in this process (see the module docstring); saves its numbers to ``spec['out']``."""
    import numpy as np
    import torch

    torch.set_num_threads(spec.get("threads", 1))
    from workbench.models import from_hf

    r: dict = dict(spec, pid=os.getpid())
    hf = build_hf(spec["shape"], spec["n_positions"])
    tok = bpe_tokenizer()
    model = from_hf(hf, tok)
    T = spec["T"]
    clean, corrupted = prompts(model, T, spec.get("at", min(20, T - 2)))
    impl, job = spec["impl"], spec["job"]
    bridge = tl_bridge(hf, tok) if impl == "tl" else None
    import gc

    gc.collect()
    r["rss_model_mb"] = rss_mb()
    with torch.no_grad():  # the answer the corruption moves most against the one it moves least
        d = hf(clean).logits[0, -1, :tok.vocab_size] - hf(corrupted).logits[0, -1, :tok.vocab_size]
    answer, wrong = int(d.argmax()), int(d.argmin())
    if job == "patch":
        from workbench.residual.patching import activation_patching

        if impl != "tl":  # layout discovery is a one-off per model, not part of a sweep
            _warm_up(model)
        t0, c0 = time.perf_counter(), time.process_time()
        if impl == "tl":
            eff = _tl_patching(bridge, clean, corrupted, answer, wrong)
        else:
            res = activation_patching(model, clean, corrupted, answer, wrong, batch_size=spec.get("batch", 16),
                                      skip_identical=impl == "ours", resume_blocks=impl != "ours-batch",
                                      progress=lambda d, n: None)
            eff = res.effect
            r["skipped"] = res.skipped
        r["time_s"] = time.perf_counter() - t0
        r["cpu_s"] = time.process_time() - c0
        np.save(spec["out"], eff)
    else:  # lens
        from workbench.residual.lens import logit_lens

        k = 5
        if impl != "tl":
            _warm_up(model)
        t0, c0 = time.perf_counter(), time.process_time()
        if impl == "tl":
            top, probs = _tl_lens(bridge, clean, k)
        elif impl == "ours-core":
            top, probs = _core_lens(model, clean, k)
        else:
            res = logit_lens(model, clean, k=k)
            top, probs = res.top_ids, res.top_probs
        r["time_s"] = time.perf_counter() - t0
        r["cpu_s"] = time.process_time() - c0
        np.save(spec["out"], np.concatenate([top.astype(np.float64), probs], axis=-1))
    r["peak_mb"] = peak_mb()
    return r


def run_one(spec: dict, timeout: float = 3600) -> dict:
    """Run :func:`worker` in a fresh interpreter and return its result (or ``{"error": ...}``)."""
    return run_worker("workbench.bench.residual_bench", spec, timeout, HF_HUB_OFFLINE="1")


def _max_diff(a, b, job: str) -> float:
    import numpy as np

    a, b = np.load(a), np.load(b)
    if job == "lens":  # top ids must agree exactly; probabilities within float noise
        k = a.shape[-1] // 2
        if not np.array_equal(a[..., :k], b[..., :k]):
            return float("inf")
        return float(np.abs(a[..., k:] - b[..., k:]).max())
    return float(np.abs(a - b).max())


def shipped_clicks(threads: int = 1, name: str = "docs-byte", repeats: int = 5) -> dict:
    """Median seconds per click on a shipped model: logit lens, direct logit attribution, a patching sweep."""
    import torch

    torch.set_num_threads(threads)
    from workbench.models import load_pretrained
    from workbench.residual.dla import direct_logit_attribution
    from workbench.residual.lens import logit_lens
    from workbench.residual.patching import activation_patching

    m = load_pretrained(name)
    clean, corrupt = "The function returns a list of", "The function returns a dict of"
    acts = {
        "lens": lambda: logit_lens(m, clean, k=5),
        "dla": lambda: direct_logit_attribution(m, clean, " ", "s"),
        "patching": lambda: activation_patching(m, clean, corrupt, " ", "s", progress=lambda d, n: None),
    }
    out = {"model": name, "T": len(m.tokenizer.encode(clean)), "n_layer": m.config.n_layer}
    for k, fn in acts.items():
        fn()  # first use finds the layout
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[k + "_ms"] = statistics.median(ts) * 1e3
    return out


def report(rows: list, clicks: dict | None) -> str:
    by = {(r["job"], r["impl"]): r for r in rows}
    out = []
    for job, what in (("lens", "logit lens"), ("patch", "resid_pre patching sweep")):
        tl = by.get((job, "tl"))
        if tl is None:
            continue
        out.append(f"{what} (T = {tl['T']}{', all layers x all positions' if job == 'patch' else ''}):")
        for impl in ("tl", "ours", "ours-core", "ours-noskip", "ours-batch"):
            r = by.get((job, impl))
            if r is None:
                continue
            if "error" in r:
                out.append(f"  {impl:>12}: error {r['error']}")
                continue
            ratio = tl["time_s"] / r["time_s"] if "error" not in tl else float("nan")
            cpu_ratio = tl["cpu_s"] / r["cpu_s"] if "error" not in tl and r.get("cpu_s") else float("nan")
            diff = r.get("max_diff")
            extra = f", skipped {r['skipped']} identical cells" if r.get("skipped") else ""
            verdict = ""
            if job == "patch" and impl != "tl":
                ok = min(ratio, cpu_ratio) >= GOAL_RATIO and r["peak_mb"] / 1024 < GOAL_PEAK_GB
                verdict = f"  goal (>= {GOAL_RATIO:.0f}x, peak < {GOAL_PEAK_GB:.0f} GB): {'met' if ok else 'NOT met'}"
            cpu = r.get("cpu_s", float("nan"))
            out.append(f"  {impl:>12}: {r['time_s']:7.2f} s  {ratio:5.2f}x TL  CPU {cpu:7.2f} s  "
                       f"{cpu_ratio:5.2f}x TL  peak RSS {r['peak_mb'] / 1024:5.2f} GB"
                       f" (model {r['rss_model_mb'] / 1024:4.2f} GB)"
                       + ("" if diff is None else f"  max |diff| vs TL {diff:.2e}") + extra + verdict)
    if clicks:
        out.append(f"shipped {clicks['model']} ({clicks['n_layer']} layers, T = {clicks['T']}), median per click:")
        for k in ("lens", "dla", "patching"):
            ms = clicks[k + "_ms"]
            out.append(f"  {k:>12}: {ms:6.1f} ms  goal < {GOAL_CLICK_MS:.0f} ms: "
                       f"{'met' if ms < GOAL_CLICK_MS else 'NOT met'}")
    out.append("peak RSS: ru_maxrss of the row's own process (interpreter, torch, transformers, weights, the work); "
               "ratios: TransformerLens time / ours (wall clock, then CPU time of the process, which a busy shared "
               "machine disturbs less), same machine, same threads; the patching goal needs both.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = worker_parser("python -m workbench.bench residual", __doc__)
    ap.add_argument("--lens-T", type=int, default=512)
    ap.add_argument("--patch-T", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer width-64 model (plumbing check)")
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped model's click latencies")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if serve_worker(args, worker):
        return 0
    shape = TINY if args.tiny else GPT2_SMALL
    tmp = tempfile.mkdtemp(prefix="wb-bench-residual-")
    specs = []
    for job, T, impls in (("lens", args.lens_T, ("tl", "ours", "ours-core")),
                          ("patch", args.patch_T, ("tl", "ours", "ours-noskip", "ours-batch"))):
        for impl in impls:
            specs.append(dict(job=job, impl=impl, T=T, n_positions=max(1024, T), shape=shape, threads=args.threads,
                              at=min(20, T - 2), out=os.path.join(tmp, f"{job}-{impl}.npy")))
    print(f"residual lab vs TransformerLens on a random GPT-2 ({'tiny' if args.tiny else '124M, GPT-2 small shape'}), "
          f"one fresh process per row, torch threads {args.threads}", flush=True)
    rows = []
    for s in specs:
        r = run_one(s)
        rows.append(r)
        print(f"  {s['job']} {s['impl']}: " + (f"error {r['error']}" if "error" in r else
              f"{r['time_s']:.2f} s (CPU {r.get('cpu_s', float('nan')):.2f} s), peak {r['peak_mb']:.0f} MB"),
              flush=True)
    tl = {r["job"]: r for r in rows if r["impl"] == "tl" and "error" not in r}
    for r in rows:
        if r["impl"] != "tl" and "error" not in r and r["job"] in tl:
            r["max_diff"] = _max_diff(r["out"], tl[r["job"]]["out"], r["job"])
    clicks = None if args.no_shipped else shipped_clicks(args.threads)
    print()
    print(report(rows, clicks))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "clicks": clicks}, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
