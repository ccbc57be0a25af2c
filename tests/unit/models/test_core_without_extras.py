"""The core imports and runs without the optional extras (transformers, tokenizers, cupy) and never imports ipywidgets."""
import subprocess
import sys
import textwrap


def test_core_runs_without_extras_and_without_widgets():
    code = textwrap.dedent("""
        import sys
        for name in ("transformers", "tokenizers", "cupy", "ipywidgets", "jupyter_bokeh"):
            sys.modules[name] = None  # any import of these now fails
        import torch
        import workbench, workbench.data, workbench.models, workbench.tokenizers, workbench.attention
        import workbench.decoding, workbench.scaling, workbench.kernels
        from workbench.models import GPTConfig, TinyGPT, load_pretrained, train
        m = load_pretrained("docs-byte-draft")
        assert m(torch.tensor([m.tokenizer.encode("def f(x):")])).logits.shape[-1] == 258
        tiny = TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, n_embd=8, block_size=8))
        train(tiny, torch.arange(100) % 10, steps=2, batch_size=2, progress=False)
        from workbench import kernels
        assert kernels.backend() == "reference"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
