"""Remake ``replays/repeated_sampling_addition.json``: coverage and majority vote against k for the shipped
addition models (:mod:`workbench.scaling.addition_models`).

``python -m workbench.scaling.make_repeated_sampling [--problems 200] [--samples 256]``: for each of the seven
models, ``samples`` answers per held-out problem at temperature 1 (and 0.5), scored by unbiased pass@k and
majority-vote accuracy (:mod:`workbench.decoding.repeated`) for k = 1, 2, 4, ..., samples. One thread; a few
minutes on an idle core.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).parent / "replays" / "repeated_sampling_addition.json"
PROBLEMS, SAMPLES, TEMPERATURES = 200, 256, (1.0, 0.5)


def main(argv=None) -> int:
    import torch

    from workbench.decoding.repeated import repeated_sampling, sample_answers

    from .addition_models import addition_models, addition_test_problems, load_addition_model

    ap = argparse.ArgumentParser(prog="python -m workbench.scaling.make_repeated_sampling",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--problems", type=int, default=PROBLEMS)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    probs = addition_test_problems(args.problems)
    targets = [p.answer for p in probs]
    doc = {"format": "workbench.repeated_sampling", "version": 1,
           "command": "python -m workbench.scaling.make_repeated_sampling",
           "settings": {"problems": args.problems, "samples": args.samples, "temperatures": list(TEMPERATURES),
                        "task": "2-digit addition, held-out problems of the shipped addition models",
                        "seed": 0}, "runs": []}
    for info in addition_models():
        model = load_addition_model(info.name)
        for temp in TEMPERATURES:
            t0 = time.perf_counter()
            answers = sample_answers(model, probs, args.samples, temperature=temp)
            r = repeated_sampling(answers, targets, name=info.name, temperature=temp, greedy=info.exact_match,
                                  N=info.N)
            doc["runs"].append(r.to_dict())
            Path(args.out).write_text(json.dumps(doc, indent=1))
            print(f"{info.name} T={temp}: greedy {info.exact_match:.3f} pass@1 {r.coverage[0]:.3f} "
                  f"pass@{r.ks[-1]} {r.coverage[-1]:.3f} majority@{r.ks[-1]} {r.majority[-1]:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
