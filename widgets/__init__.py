"""ipywidgets front-ends for the workbench labs (bokeh figures inside). Widgets draw; the core computes."""
from importlib import import_module

from .base import Debouncer, WorkbenchWidget, bokeh_pane, load_bokeh, side_by_side

# Each lab lives in its own module and is imported on first use, so `import widgets` stays cheap.
_LABS = {
    "Playground": "widgets.playground",
    "TokenizerLab": "widgets.tokenizer_lab",
    "AttentionLab": "widgets.attention_lab",
    "DecodingLab": "widgets.decoding_lab",
    "ScalingLab": "widgets.scaling_lab",
    "ResidualLab": "widgets.residual_lab",
    "DataLab": "widgets.data_lab",
    "MemoryLab": "widgets.memory_lab",
}

__all__ = ["Debouncer", "WorkbenchWidget", "bokeh_pane", "load_bokeh", "side_by_side", *_LABS]


def __getattr__(name):
    if name in _LABS:
        return getattr(import_module(_LABS[name]), name)
    raise AttributeError(f"module 'widgets' has no attribute {name!r}")
