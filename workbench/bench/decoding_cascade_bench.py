"""The decoding bench's cascade part: what a small -> large cascade costs at a fixed quality, measured.

For each shipped pair and deferral rule: the threshold whose teacher-forced bits per byte on the validation text
closes ``gap`` (default 90%) of the gap between the small and the large model
(:meth:`~workbench.decoding.cascade.CascadeCurve.at_quality`), then greedy generation through the cascade at that
threshold timed against the large model's greedy decoding alone on the same prompts (best of two runs).
"""
from __future__ import annotations

import math


def cascade_costs(pairs=("byte", "bpe"), *, gap: float = 0.9, max_new_tokens: int = 64, prompts=None) -> list[dict]:
    """One row per (pair, rule): the quality target, the deferral and threshold that reach it, and measured
    wall time of the cascade against the large model alone (on ``prompts``, default the cascade module's four)."""
    from workbench.decoding.cascade import PROMPTS, RULES, shipped_pair_curve, timed_points
    from workbench.models import load_pretrained
    from workbench.decoding.cascade import PAIRS

    rows = []
    for pair in pairs:
        comp = shipped_pair_curve(pair)
        target = comp.small_bpb - gap * (comp.small_bpb - comp.large_bpb)
        small, large = (load_pretrained(n) for n in PAIRS[pair])
        for rule in RULES:
            deferral, thr = comp.curves[rule].at_quality(target)
            row = {"pair": pair, "rule": rule, "small_bpb": comp.small_bpb, "large_bpb": comp.large_bpb,
                   "target_bpb": target, "deferral": deferral, "threshold": thr,
                   "oracle_deferral": comp.curves["oracle"].at_quality(target)[0]}
            if not math.isnan(thr):
                p = timed_points(small, large, list(prompts or PROMPTS), rule, [thr], max_new_tokens)[0]
                row.update(generated_deferral=p.deferral, large_calls=p.large_calls, cascade_s=p.wall_s,
                           large_alone_s=p.large_alone_s, speedup=p.speedup)
            rows.append(row)
    return rows


def report(rows, gap: float = 0.9) -> str:
    lines = [f"4) cascades at a fixed quality: the threshold that closes {gap:.0%} of the small -> large gap in "
             "bits per byte\n   (teacher-forced on the validation text), then greedy generation through the "
             "cascade timed against the large model alone",
             f"   {'pair':5s} {'rule':9s} {'bits/byte':>9s} {'sent to large':>13s} {'oracle':>7s} "
             f"{'in generation':>13s} {'cascade s':>9s} {'large s':>8s} {'speedup':>8s}"]
    for r in rows:
        if "cascade_s" in r:
            lines.append(f"   {r['pair']:5s} {r['rule']:9s} {r['target_bpb']:9.3f} {r['deferral']:13.1%} "
                         f"{r['oracle_deferral']:7.1%} {r['generated_deferral']:13.1%} {r['cascade_s']:9.3f} "
                         f"{r['large_alone_s']:8.3f} {r['speedup']:7.2f}x")
        else:
            lines.append(f"   {r['pair']:5s} {r['rule']:9s} {r['target_bpb']:9.3f}   never reached")
    lines.append("   (a cascade runs the small model on every token and the large one on each deferred token, so "
                 "it saves time only when the large model costs much more than the small one and few tokens are "
                 "deferred)")
    return "\n".join(lines)
