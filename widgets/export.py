"""Export what a widget shows: its figures as one PNG, its data as CSV, JSON or .npz. No browser needed.

bokeh's own ``export_png`` drives a headless browser through selenium and a webdriver; Binder and most
laptops have neither, and this project installs nothing from the internet at run time. So the PNG is drawn
server-side: :func:`render_png` redraws the bokeh figures a widget currently shows with matplotlib (the glyph
types the labs use: ``hbar``, ``vbar``, ``quad``, ``rect``, ``image``, ``line``, ``multi_line``, ``segment``,
``scatter``, ``varea``, ``text``; ``Span``, ``Legend`` and ``ColorBar`` annotations), keeping titles, axis
labels, ranges, log and categorical axes, flipped ranges and colours (colour-mapper transforms included). The
layout follows the widget: side-by-side boxes side by side, stacked boxes stacked, only the selected tab of a
``Tab``, nothing that is hidden (``display: none``).

The data are the ``ColumnDataSource`` objects behind those figures (every source a widget holds as an
attribute, named after it) plus the widget's own state (its core result, settings): ``.json`` holds all of
it, ``.npz`` the same as arrays, ``.csv`` one table. Numbers round-trip exactly (JSON floats are repr'd;
NaN and infinities become ``null`` in JSON, the only thing JSON lacks).

This module draws and writes files; it computes nothing about language models.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

DATA_FORMATS = (".json", ".csv", ".npz")


class ExportError(ValueError):
    """An export could not be made; the message says why (nothing shown yet, unknown format, ...)."""


# ------------------------------------------------------------------------------------------------ data
def to_jsonable(obj: Any, _depth: int = 0) -> Any:
    """Plain JSON types for numbers, strings, arrays, tensors, dataclasses, dicts and sequences (NaN -> None)."""
    if _depth > 12:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), _depth + 1)
    if type(obj).__module__.startswith("torch"):
        if hasattr(obj, "detach") and hasattr(obj, "tolist"):
            return to_jsonable(obj.detach().cpu().tolist(), _depth + 1)
        return repr(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), _depth + 1) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    return repr(obj)


def _csv_cell(v: Any) -> Any:
    v = to_jsonable(v)
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return repr(v) if isinstance(v, float) else v


def write_csv(path: Path, table: dict[str, list]) -> None:
    """One table: a header of column names, one row per item; nested values (tuples, arrays) as JSON."""
    cols = list(table)
    n = max((len(table[c]) for c in cols), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for i in range(n):
        w.writerow([_csv_cell(table[c][i]) if i < len(table[c]) else "" for c in cols])
    path.write_text(buf.getvalue(), encoding="utf-8")


def _column_arrays(prefix: str, values: Any) -> dict[str, np.ndarray]:
    """Arrays for one column: numbers or strings as one array, a list of arrays (images) element by element;
    anything else (None mixed in, ragged lists) as its JSON text under ``<prefix>.json``."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return {prefix: values}
    values = list(values)
    if values and all(isinstance(v, np.ndarray) for v in values):
        if len(values) == 1:
            return {prefix: values[0]}
        return {f"{prefix}.{i}": v for i, v in enumerate(values)}
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        arr = None
    if arr is not None and arr.dtype != object:
        return {prefix: arr}
    return {f"{prefix}.json": np.array(json.dumps(to_jsonable(values)))}


def write_npz(path: Path, tables: dict[str, dict], meta: dict) -> None:
    """``<table>.<column>`` arrays for every table and ``meta.json`` (widget, state) as one string."""
    arrays: dict[str, np.ndarray] = {}
    for t, cols in tables.items():
        for c, values in cols.items():
            arrays.update(_column_arrays(f"{t}.{c}", values))
    arrays["meta.json"] = np.array(json.dumps(to_jsonable(meta)))
    with open(path, "wb") as fh:  # np.savez on a path would append ".npz" to any other suffix
        np.savez(fh, **arrays)


def write_data(path: Path, tables: dict[str, dict], meta: dict, table: str | None = None) -> str | None:
    """Write ``tables`` (name -> column dict) and ``meta`` to ``path`` in the format its suffix names.

    ``.csv`` writes one table: ``table`` or else the first non-empty one; returns the table written."""
    suffix = path.suffix.lower()
    if suffix not in DATA_FORMATS:
        raise ExportError(f"unknown data format {path.suffix or '(no suffix)'!r} in {path.name}: use "
                          + ", ".join(DATA_FORMATS))
    if suffix == ".json":
        doc = {**to_jsonable(meta), "tables": to_jsonable(tables)}
        path.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
        return None
    if suffix == ".npz":
        write_npz(path, tables, meta)
        return None
    if table is None:
        table = next((t for t, cols in tables.items() if any(len(v) for v in cols.values())), None)
        if table is None:
            raise ExportError("nothing to export yet: every table is empty")
    if table not in tables:
        raise ExportError(f"no table {table!r}; tables: {', '.join(tables)}")
    write_csv(path, tables[table])
    return table


# ------------------------------------------------------------------------------------------------ layout
@dataclasses.dataclass
class _Node:
    kind: str  # "fig", "row" or "col"
    fig: Any = None
    children: list = dataclasses.field(default_factory=list)
    gap: int = 10

    @property
    def size(self) -> tuple[int, int]:
        if self.kind == "fig":
            return int(self.fig.width or 600), int(self.fig.height or 600)
        sizes = [c.size for c in self.children]
        gaps = self.gap * (len(sizes) - 1)
        if self.kind == "row":
            return sum(w for w, _ in sizes) + gaps, max(h for _, h in sizes)
        return max(w for w, _ in sizes), sum(h for _, h in sizes) + gaps

    def place(self, x: int, y: int):
        """(figure, x, y, w, h) for every figure, origin top left, in pixels."""
        if self.kind == "fig":
            w, h = self.size
            yield self.fig, x, y, w, h
            return
        for c in self.children:
            yield from c.place(x, y)
            w, h = c.size
            if self.kind == "row":
                x += w + self.gap
            else:
                y += h + self.gap


def _group(kind: str, nodes: list) -> _Node | None:
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return None
    if len(nodes) == 1:
        return nodes[0]
    return _Node(kind, children=nodes)


def _bokeh_node(model) -> _Node | None:
    from bokeh.layouts import Column, GridBox, Row
    from bokeh.models import Plot

    if model is None or getattr(model, "visible", True) is False:
        return None
    if isinstance(model, Plot):
        return _Node("fig", fig=model)
    if isinstance(model, Row):
        return _group("row", [_bokeh_node(c) for c in model.children])
    if isinstance(model, Column):
        return _group("col", [_bokeh_node(c) for c in model.children])
    if isinstance(model, GridBox):
        return _group("col", [_bokeh_node(c[0]) for c in model.children])
    return None


def shown_layout(widget) -> _Node | None:
    """The bokeh figures a widget shows now, as rows and columns like its boxes; hidden parts left out."""
    import ipywidgets as W

    from .base import BokehPane

    layout = getattr(widget, "layout", None)
    if layout is not None and (layout.display == "none" or layout.visibility == "hidden"):
        return None
    if isinstance(widget, BokehPane):
        return _bokeh_node(widget._model)
    children = list(getattr(widget, "children", ()) or ())
    if isinstance(widget, (W.Tab, W.Accordion, W.Stack)):
        i = widget.selected_index
        return shown_layout(children[i]) if i is not None and 0 <= i < len(children) else None
    kind = "row" if isinstance(widget, (W.HBox, W.GridBox)) else "col"
    return _group(kind, [shown_layout(c) for c in children])


# ------------------------------------------------------------------------------------------------ drawing
_MARKERS = {"circle": "o", "dot": ".", "star": "*", "x": "x", "cross": "+", "square": "s", "triangle": "^",
            "inverted_triangle": "v", "diamond": "D", "hex": "h", "plus": "P", "asterisk": "*", "y": "1",
            "square_x": "s", "circle_x": "o", "dash": "_"}
_LOCS = {"top_left": "upper left", "top_right": "upper right", "bottom_left": "lower left",
         "bottom_right": "lower right", "top_center": "upper center", "bottom_center": "lower center",
         "center_left": "center left", "center_right": "center right", "center": "center", "left": "center left",
         "right": "center right", "top": "upper center", "bottom": "lower center"}
PT = 0.72  # points per pixel at 100 dpi: a figure drawn at 100 dpi has bokeh's sizes in pixels


def _px(size, default: float = 11.0) -> float:
    """A bokeh font size ("10px", "1em", "12pt") in pixels."""
    if isinstance(size, str):
        s = size.strip()
        try:
            if s.endswith("px"):
                return float(s[:-2])
            if s.endswith("pt"):
                return float(s[:-2]) / PT
            if s.endswith("em"):
                return float(s[:-2]) * 13
            return float(s)
        except ValueError:
            return default
    return default


class _Drawer:
    """Draws one bokeh figure on one matplotlib axes."""

    def __init__(self, bfig, ax):
        self.f, self.ax = bfig, ax
        self.xmap = self._factor_map(bfig.x_range)
        self.ymap = self._factor_map(bfig.y_range)
        self.handles: dict[int, Any] = {}  # renderer id -> matplotlib artist (for the legend)

    # -- values -------------------------------------------------------------------------------------------
    @staticmethod
    def _factor_map(rng):
        from bokeh.models import FactorRange

        if not isinstance(rng, FactorRange):
            return None
        pos, x, prev = {}, 0.0, None
        for f in rng.factors:
            top = f[0] if isinstance(f, (tuple, list)) else None
            if prev is not None and top != prev[0]:
                x += float(rng.group_padding or 0)
            pos[tuple(f) if isinstance(f, list) else f] = x + 0.5
            x += 1.0 + float(rng.factor_padding or 0)
            prev = (top,)
        return pos

    @staticmethod
    def _spec(glyph, name, data, n):
        """(values array or scalar, transform) of a glyph property: a column when the name is one."""
        v = getattr(glyph, name, None)
        transform = None
        if v is not None and type(v).__name__ == "Field":
            transform = getattr(v, "transform", None)
            transform = None if type(transform).__name__ == "UnspecifiedType" else transform
            v = v.field
        elif v is not None and type(v).__name__ == "Value":
            return v.value, None
        if isinstance(v, str) and v in data:
            return list(data[v]), transform
        return v, None

    def _coord(self, glyph, name, data, n, axis):
        v, _ = self._spec(glyph, name, data, n)
        fmap = self.xmap if axis == "x" else self.ymap
        vals = v if isinstance(v, list) else [v] * n
        if fmap is not None:
            out = []
            for a in vals:
                key = tuple(a) if isinstance(a, list) else a
                out.append(fmap.get(key, np.nan) if isinstance(key, (str, tuple)) else
                           (np.nan if a is None else float(a)))
            return np.asarray(out, dtype=float)
        return np.asarray([np.nan if a is None else a for a in vals], dtype=float)

    def _num(self, glyph, name, data, n, default=0.0):
        v, _ = self._spec(glyph, name, data, n)
        if v is None:
            v = default
        if isinstance(v, list):
            return np.asarray([np.nan if a is None else a for a in v], dtype=float)
        return np.full(n, float(v))

    def _rgba(self, glyph, color_name, alpha_name, data, n, global_alpha=1.0):
        from matplotlib.colors import to_rgba

        v, transform = self._spec(glyph, color_name, data, n)
        if transform is not None and isinstance(v, list):
            cols = _map_colors(transform, np.asarray(v, dtype=float))
        else:
            vals = v if isinstance(v, list) else [v] * n
            cols = []
            for c in vals:
                if c is None:
                    cols.append((0, 0, 0, 0))
                else:
                    try:
                        cols.append(to_rgba(_bokeh_color(c)))
                    except ValueError:
                        cols.append((0.5, 0.5, 0.5, 1.0))
        out = np.asarray(cols, dtype=float).reshape(n, 4) if n else np.zeros((0, 4))
        a = self._num(glyph, alpha_name, data, n, 1.0) if alpha_name else np.ones(n)
        out[:, 3] *= np.nan_to_num(a, nan=1.0) * global_alpha
        return out

    def _fill(self, glyph, data, n):
        return self._rgba(glyph, "fill_color", "fill_alpha", data, n)

    def _line(self, glyph, data, n):
        return self._rgba(glyph, "line_color", "line_alpha", data, n)

    def _dash(self, glyph):
        d = getattr(glyph, "line_dash", None)
        if not d:
            return "-"
        if isinstance(d, str):
            return {"dashed": "--", "dotted": ":", "dotdash": "-.", "dashdot": "-."}.get(d, "-")
        seq = list(d) if len(d) % 2 == 0 else list(d) * 2
        return (0, tuple(x * PT for x in seq))

    def _lw(self, glyph):
        return float(getattr(glyph, "line_width", 1) or 0) * PT

    # -- glyphs -------------------------------------------------------------------------------------------
    def draw(self, renderer) -> None:
        g, data = renderer.glyph, dict(renderer.data_source.data)
        n = max((len(v) for v in data.values()), default=0)
        kind = type(g).__name__
        fn = getattr(self, f"_g_{kind.lower()}", None)
        if fn is None:
            return
        if kind not in ("Line", "MultiLine", "Image", "VArea", "HArea") and n == 0:
            return
        if kind in ("Line", "VArea", "HArea") and n == 0:
            n = len(self._spec(g, "x", data, 0)[0] or []) if isinstance(self._spec(g, "x", data, 0)[0], list) else 0
            if n == 0:
                return
        art = fn(g, data, n)
        if art is not None:
            self.handles[id(renderer)] = art

    def _bars(self, x0, x1, y0, y1, g, data, n):
        from matplotlib.collections import PatchCollection
        from matplotlib.patches import Rectangle

        rects = [Rectangle((min(a, b), min(c, d)), abs(b - a), abs(d - c))
                 for a, b, c, d in zip(x0, x1, y0, y1) if np.isfinite([a, b, c, d]).all()]
        ok = np.isfinite(np.stack([x0, x1, y0, y1])).all(0)
        fill, line = self._fill(g, data, n)[ok], self._line(g, data, n)[ok]
        pc = PatchCollection(rects, facecolors=fill, edgecolors=line, linewidths=self._lw(g))
        self.ax.add_collection(pc)
        self._extend(np.concatenate([x0[ok], x1[ok]]), np.concatenate([y0[ok], y1[ok]]))
        return pc

    def _extend(self, xs, ys):
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.any():
            self.ax.update_datalim(np.column_stack([xs[ok], ys[ok]]))

    def _g_hbar(self, g, data, n):
        y, h = self._coord(g, "y", data, n, "y"), self._num(g, "height", data, n, 1.0)
        return self._bars(self._coord(g, "left", data, n, "x"), self._coord(g, "right", data, n, "x"),
                          y - h / 2, y + h / 2, g, data, n)

    def _g_vbar(self, g, data, n):
        x, w = self._coord(g, "x", data, n, "x"), self._num(g, "width", data, n, 1.0)
        return self._bars(x - w / 2, x + w / 2, self._coord(g, "bottom", data, n, "y"),
                          self._coord(g, "top", data, n, "y"), g, data, n)

    def _g_quad(self, g, data, n):
        return self._bars(self._coord(g, "left", data, n, "x"), self._coord(g, "right", data, n, "x"),
                          self._coord(g, "bottom", data, n, "y"), self._coord(g, "top", data, n, "y"), g, data, n)

    def _g_rect(self, g, data, n):
        x, y = self._coord(g, "x", data, n, "x"), self._coord(g, "y", data, n, "y")
        w, h = self._num(g, "width", data, n, 1.0), self._num(g, "height", data, n, 1.0)
        return self._bars(x - w / 2, x + w / 2, y - h / 2, y + h / 2, g, data, n)

    def _g_line(self, g, data, n):
        x, y = self._coord(g, "x", data, n, "x"), self._coord(g, "y", data, n, "y")
        (art,) = self.ax.plot(x, y, color=self._line(g, data, 1)[0], lw=self._lw(g), ls=self._dash(g))
        return art

    def _g_multiline(self, g, data, n):
        from matplotlib.collections import LineCollection

        xs, _ = self._spec(g, "xs", data, n)
        ys, _ = self._spec(g, "ys", data, n)
        if not isinstance(xs, list) or not xs:
            return None
        segs = [np.column_stack([np.asarray(a, float), np.asarray(b, float)]) for a, b in zip(xs, ys)]
        lc = LineCollection(segs, colors=self._line(g, data, len(segs)), linewidths=self._lw(g),
                            linestyles=self._dash(g))
        self.ax.add_collection(lc)
        allxy = np.concatenate(segs) if segs else np.zeros((0, 2))
        self._extend(allxy[:, 0], allxy[:, 1])
        return lc

    def _g_segment(self, g, data, n):
        from matplotlib.collections import LineCollection

        x0, y0 = self._coord(g, "x0", data, n, "x"), self._coord(g, "y0", data, n, "y")
        x1, y1 = self._coord(g, "x1", data, n, "x"), self._coord(g, "y1", data, n, "y")
        segs = [[(a, b), (c, d)] for a, b, c, d in zip(x0, y0, x1, y1)]
        lc = LineCollection(segs, colors=self._line(g, data, n), linewidths=self._lw(g), linestyles=self._dash(g))
        self.ax.add_collection(lc)
        self._extend(np.concatenate([x0, x1]), np.concatenate([y0, y1]))
        return lc

    def _g_scatter(self, g, data, n):
        x, y = self._coord(g, "x", data, n, "x"), self._coord(g, "y", data, n, "y")
        size = self._num(g, "size", data, n, 4.0) * PT
        mk, _ = self._spec(g, "marker", data, n)
        marks = mk if isinstance(mk, list) else [mk] * n
        fill, line = self._fill(g, data, n), self._line(g, data, n)
        art = None
        for m in dict.fromkeys(marks):
            sel = np.array([mm == m for mm in marks])
            marker = _MARKERS.get(m, "o")
            kw = dict(s=size[sel] ** 2, marker=marker, linewidths=max(self._lw(g), 0.5))
            if marker in ("x", "+", "1", "_"):  # line-only markers take the line colour
                kw.update(c=line[sel])
            else:
                kw.update(facecolors=fill[sel], edgecolors=line[sel])
            art = self.ax.scatter(x[sel], y[sel], zorder=3, **kw)
        return art

    _g_circle = _g_scatter

    def _g_varea(self, g, data, n):
        x = self._coord(g, "x", data, n, "x")
        y1, y2 = self._coord(g, "y1", data, n, "y"), self._coord(g, "y2", data, n, "y")
        if not np.isfinite(y1).any():
            return None
        return self.ax.fill_between(x, y1, y2, color=self._fill(g, data, 1)[0], lw=0)

    def _g_harea(self, g, data, n):
        y = self._coord(g, "y", data, n, "y")
        x1, x2 = self._coord(g, "x1", data, n, "x"), self._coord(g, "x2", data, n, "x")
        return self.ax.fill_betweenx(y, x1, x2, color=self._fill(g, data, 1)[0], lw=0)

    def _g_text(self, g, data, n):
        x, y = self._coord(g, "x", data, n, "x"), self._coord(g, "y", data, n, "y")
        txt, _ = self._spec(g, "text", data, n)
        txt = txt if isinstance(txt, list) else [txt] * n
        dx, dy = self._num(g, "x_offset", data, n, 0.0), self._num(g, "y_offset", data, n, 0.0)
        al, _ = self._spec(g, "text_align", data, n)
        al = al if isinstance(al, list) else [al or "left"] * n
        bl = getattr(g, "text_baseline", "bottom") or "bottom"
        va = {"top": "top", "middle": "center", "bottom": "bottom", "alphabetic": "baseline",
              "hanging": "top", "ideographic": "bottom"}.get(bl if isinstance(bl, str) else "bottom", "bottom")
        fs = _px(getattr(g, "text_font_size", "13px"), 13.0) * PT
        col = self._rgba(g, "text_color", "text_alpha", data, n)
        for i in range(n):
            if txt[i] is None or not np.isfinite([x[i], y[i]]).all():
                continue
            self.ax.annotate(str(txt[i]), (x[i], y[i]), xytext=(dx[i] * PT, -dy[i] * PT),
                             textcoords="offset points", ha=al[i] if al[i] in ("left", "right", "center") else "left",
                             va=va, fontsize=fs, color=col[i], annotation_clip=True)
        self._extend(x, y)
        return None

    def _g_image(self, g, data, n):
        imgs, _ = self._spec(g, "image", data, n)
        if not isinstance(imgs, list):
            return None
        mapper = getattr(g, "color_mapper", None)
        art = None
        for i, img in enumerate(imgs):
            img = np.asarray(img, dtype=float)
            if img.ndim != 2 or img.size == 0:
                continue
            x, y = self._num(g, "x", data, n)[i], self._num(g, "y", data, n)[i]
            dw, dh = self._num(g, "dw", data, n, 1.0)[i], self._num(g, "dh", data, n, 1.0)[i]
            cmap, norm = _mpl_cmap(mapper, img)
            art = self.ax.imshow(img, origin="lower", extent=(x, x + dw, y, y + dh), cmap=cmap, norm=norm,
                                 interpolation="nearest", aspect="auto", alpha=float(getattr(g, "global_alpha", 1.0)),
                                 zorder=0.1)
            self._extend([x, x + dw], [y, y + dh])
        return art


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.number)) and math.isfinite(v)


def _bokeh_color(c):
    if isinstance(c, (tuple, list)):
        c = tuple(c)
        return tuple(v / 255 for v in c[:3]) + ((c[3],) if len(c) > 3 else ())
    if isinstance(c, (int, np.integer)):  # 0xRRGGBBAA
        c = int(c)
        return ((c >> 24) & 255) / 255, ((c >> 16) & 255) / 255, ((c >> 8) & 255) / 255, (c & 255) / 255
    return c


def _mpl_cmap(mapper, values):
    from matplotlib.colors import ListedColormap, LogNorm, Normalize

    if mapper is None:
        return "viridis", Normalize(np.nanmin(values), np.nanmax(values))
    cmap = ListedColormap([_bokeh_color(c) for c in mapper.palette])
    nan = getattr(mapper, "nan_color", None)
    if nan:
        cmap = cmap.with_extremes(bad=_bokeh_color(nan))
    finite = values[np.isfinite(values)] if np.size(values) else np.zeros(1)
    lo = mapper.low if mapper.low is not None else (finite.min() if finite.size else 0.0)
    hi = mapper.high if mapper.high is not None else (finite.max() if finite.size else 1.0)
    if hi == lo:
        hi = lo + 1e-12
    if type(mapper).__name__ == "LogColorMapper" and lo > 0:
        return cmap, LogNorm(lo, hi)
    return cmap, Normalize(lo, hi)


def _map_colors(mapper, values):
    cmap, norm = _mpl_cmap(mapper, values)
    if isinstance(cmap, str):
        import matplotlib

        cmap = matplotlib.colormaps[cmap]
    return cmap(norm(np.ma.masked_invalid(values)))


def _rotation(orient) -> float:
    if isinstance(orient, (int, float)):
        return math.degrees(orient)
    return {"vertical": 90.0, "horizontal": 0.0, "parallel": 0.0, "normal": 90.0}.get(orient, 0.0)


def _label_len(labels) -> int:
    return max((len(str(s)) for s in labels), default=0)


def _factor_labels(rng):
    """(positions, inner labels, [(group centre, group label)]) of a FactorRange."""
    pos = _Drawer._factor_map(rng)
    ticks, labels, groups = [], [], {}
    for f, p in pos.items():
        ticks.append(p)
        if isinstance(f, tuple):
            labels.append(str(f[-1]))
            groups.setdefault(f[0], []).append(p)
        else:
            labels.append(str(f))
    return ticks, labels, [(float(np.mean(v)), str(k)) for k, v in groups.items()]


def _draw_figure(mfig, bfig, x, y, w, h, W_, H_):
    """Draw one bokeh figure into the pixel box (x, y, w, h) (origin top left) of a W_ x H_ matplotlib figure."""
    from bokeh.models import ColorBar, FactorRange, FixedTicker, Legend, LogScale, Range1d, SingleIntervalTicker, Span

    from bokeh.models import Axis

    fs = 11 * PT
    xr, yr = bfig.x_range, bfig.y_range
    # the x axis below the plot is the main one; an axis above it (say token labels over positions) is drawn on top
    below = [a for a in bfig.below if isinstance(a, Axis)]
    above = [a for a in bfig.above if isinstance(a, Axis) and a.visible]
    xaxis = below[0] if below else (bfig.xaxis[0] if bfig.xaxis else None)
    top_axis = above[0] if below and above else None
    yaxis = bfig.yaxis[0] if bfig.yaxis else None
    xvis = xaxis is not None and xaxis.visible
    yvis = yaxis is not None and yaxis.visible
    xrot = _rotation(xaxis.major_label_orientation) if xvis else 0.0
    # margins (pixels) for ticks, labels, title, colour bar and a legend outside
    if isinstance(yr, FactorRange) and yvis:
        left = 12 + 6.5 * _label_len(_factor_labels(yr)[1])
    else:
        left = 50 if yvis else 8
    if yvis and yaxis.axis_label:
        left += 18
    if isinstance(xr, FactorRange) and xvis:
        ticks, labels, groups = _factor_labels(xr)
        if not xrot and len(labels) * (6.5 * _label_len(labels) + 6) > 0.8 * w:  # would overlap: turn them
            xrot = 60.0
        bottom = 14 + 6.0 * _label_len(labels) * abs(math.sin(math.radians(xrot))) + 12
        bottom += 16 if groups else 0
    else:
        bottom = 28 if xvis else 8
    if xvis and xaxis.axis_label:
        bottom += 18
    title = bfig.title.text if bfig.title is not None else ""
    top = (26 if title else 10) + (18 if top_axis is not None else 0)
    right = 14
    colorbars = [a for a in bfig.right if isinstance(a, ColorBar)]
    side_legends = [a for a in bfig.right if isinstance(a, Legend)]
    right += 62 * len(colorbars)
    legend_w = 0
    for lg in side_legends:
        legend_w = max(legend_w, 40 + 6.2 * _label_len(_legend_label(i) for i in lg.items))
    right += legend_w
    left = min(left, 0.45 * w)
    bottom = min(bottom, 0.5 * h)
    fw, fh = max(w - left - right, 20), max(h - top - bottom, 20)
    ax = mfig.add_axes([(x + left) / W_, 1 - (y + top + fh) / H_, fw / W_, fh / H_])
    ax.set_facecolor("white")
    for s in ax.spines.values():
        s.set_color("#cccccc" if xvis or yvis else "white")
    if isinstance(bfig.x_scale, LogScale):
        ax.set_xscale("log")
    if isinstance(bfig.y_scale, LogScale):
        ax.set_yscale("log")

    d = _Drawer(bfig, ax)
    for r in bfig.renderers:
        if getattr(r, "visible", True) and hasattr(r, "glyph"):
            try:
                d.draw(r)
            except (TypeError, ValueError, KeyError, IndexError) as e:  # one odd glyph must not lose the picture
                warnings.warn(f"export: could not draw {type(r.glyph).__name__}: {e}", stacklevel=2)
    for a in bfig.center:
        if isinstance(a, Span) and a.location is not None and a.visible:
            kw = dict(color=_bokeh_color(a.line_color or "black"), lw=float(a.line_width or 1) * PT,
                      ls=d._dash(a), alpha=float(a.line_alpha if a.line_alpha is not None else 1))
            (ax.axvline if a.dimension == "height" else ax.axhline)(a.location, **kw)

    # ranges
    ax.autoscale_view()
    for rng, fmap, setter, getter in ((xr, d.xmap, ax.set_xlim, ax.get_xlim), (yr, d.ymap, ax.set_ylim, ax.get_ylim)):
        if fmap is not None:
            hi = max(fmap.values(), default=0.5) + 0.5
            lo_, hi_ = 0.0, hi
            if getattr(rng, "range_padding", 0):
                pad = float(rng.range_padding)
                pad = pad * hi if rng.range_padding_units == "percent" else pad
                lo_, hi_ = -pad / 2, hi + pad / 2
            setter(lo_, hi_)
        elif isinstance(rng, Range1d):
            if rng.start is not None and rng.end is not None and rng.start != rng.end:
                setter(rng.start, rng.end)
        else:  # DataRange1d: data limits, an explicit start/end wins, then flip
            lo_, hi_ = getter()
            start, end = getattr(rng, "start", None), getattr(rng, "end", None)
            lo_ = start if _finite(start) else lo_
            hi_ = end if _finite(end) else hi_
            if lo_ == hi_:
                hi_ = lo_ + 1
            setter((hi_, lo_) if getattr(rng, "flipped", False) else (lo_, hi_))
    limits = ax.get_xlim(), ax.get_ylim()  # setting ticks below may widen the view: the ranges shown win
    ax.tick_params(which="both", labelsize=fs, colors="#444444", length=3)  # before the per-label sizes below
    if isinstance(yr, FactorRange):
        ticks, labels, _ = _factor_labels(yr)
        ax.set_yticks(ticks, labels, fontsize=fs)
    if isinstance(xr, FactorRange):
        ticks, labels, groups = _factor_labels(xr)
        ha = "right" if 0 < xrot < 90 else "center"
        ax.set_xticks(ticks, labels, rotation=xrot, ha=ha, rotation_mode="anchor" if ha == "right" else "default",
                      fontsize=fs * (0.8 if groups else 1))
        if groups:  # the outer factor below the inner labels, like bokeh's grouped axis
            depth = 16 + 5.6 * _label_len(labels) * abs(math.sin(math.radians(xrot)))
            for gx, gl in groups:
                ax.annotate(gl, (gx, 0), xycoords=("data", "axes fraction"), xytext=(0, -depth * PT),
                            textcoords="offset points", ha="center", va="top", fontsize=fs, fontweight="bold",
                            annotation_clip=False)
    else:
        if xaxis is not None and isinstance(xaxis.ticker, FixedTicker) and xaxis.ticker.ticks:
            ax.set_xticks(list(xaxis.ticker.ticks))
            over = dict(getattr(xaxis, "major_label_overrides", None) or {})
            if over:  # bokeh's tick-label overrides (say token labels at integer positions)
                ax.set_xticklabels([str(over.get(t, over.get(str(t), f"{t:g}"))) for t in xaxis.ticker.ticks],
                                   rotation=xrot, ha="right" if 0 < xrot < 90 else "center",
                                   rotation_mode="anchor" if 0 < xrot < 90 else "default")
        elif xaxis is not None and isinstance(xaxis.ticker, SingleIntervalTicker):
            from matplotlib.ticker import MultipleLocator

            ax.xaxis.set_major_locator(MultipleLocator(float(xaxis.ticker.interval)))
        if xrot:
            ax.tick_params(axis="x", labelrotation=xrot)
    if top_axis is not None and isinstance(top_axis.ticker, FixedTicker) and top_axis.ticker.ticks:
        sec = ax.secondary_xaxis("top")
        ticks = [t for t in top_axis.ticker.ticks if min(limits[0]) <= t <= max(limits[0])]
        over = dict(getattr(top_axis, "major_label_overrides", None) or {})
        sec.set_xticks(ticks, [str(over.get(t, over.get(str(t), f"{t:g}"))) for t in ticks])
        sec.tick_params(labelsize=_px(top_axis.major_label_text_font_size, 11.0) * PT, colors="#444444", length=3)
        for sp in sec.spines.values():
            sp.set_color("#cccccc")
    if yaxis is not None and not isinstance(yr, FactorRange):
        if isinstance(yaxis.ticker, FixedTicker) and yaxis.ticker.ticks:
            ax.set_yticks(list(yaxis.ticker.ticks))
            over = dict(getattr(yaxis, "major_label_overrides", None) or {})
            if over:
                ax.set_yticklabels([str(over.get(t, over.get(str(t), f"{t:g}"))) for t in yaxis.ticker.ticks])
        elif isinstance(yaxis.ticker, SingleIntervalTicker):
            from matplotlib.ticker import MultipleLocator

            ax.yaxis.set_major_locator(MultipleLocator(float(yaxis.ticker.interval)))
    for axis, scale in ((ax.xaxis, bfig.x_scale), (ax.yaxis, bfig.y_scale)):
        if isinstance(scale, LogScale):
            _log_axis(axis)
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    if not xvis:
        ax.xaxis.set_visible(False)
    elif xaxis.axis_label:
        ax.set_xlabel(str(xaxis.axis_label), fontsize=fs, labelpad=2 if not isinstance(xr, FactorRange) else 18)
    if not yvis:
        ax.yaxis.set_visible(False)
    elif yaxis.axis_label:
        ax.set_ylabel(str(yaxis.axis_label), fontsize=fs, labelpad=2)
    grids = [g for g in bfig.center if type(g).__name__ == "Grid"]
    has_image = any(type(getattr(r, "glyph", None)).__name__ == "Image" for r in bfig.renderers)
    if any(g.visible for g in grids) and not has_image:  # bokeh's grid lies under an image
        ax.grid(True, color="#e5e5e5", lw=0.6, zorder=0)
        ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=12 * PT, loc="left", pad=4)

    # colour bars and legends
    cb_x = x + left + fw + 10
    for cb in colorbars:
        cax = mfig.add_axes([cb_x / W_, 1 - (y + top + fh) / H_, 10 / W_, fh / H_])
        vals = np.array([cb.color_mapper.low or 0.0, cb.color_mapper.high or 1.0])
        cmap, norm = _mpl_cmap(cb.color_mapper, vals)
        import matplotlib.cm as cm

        cbar = mfig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        cbar.ax.tick_params(labelsize=9 * PT, length=2)
        cbar.outline.set_edgecolor("#cccccc")
        cb_x += 62
    top_legends = [a for a in bfig.above if isinstance(a, Legend)]
    legends = [lg for lg in bfig.center if isinstance(lg, Legend)] + side_legends + top_legends
    for lg in legends:
        if not lg.visible:
            continue
        handles, labels = [], []
        for item in lg.items:
            grouped = _grouped_legend(d, item)
            if grouped:  # a label given as a field: one entry per value, as BokehJS draws it
                for label, handle in grouped:
                    handles.append(handle)
                    labels.append(label)
                continue
            arts = [d.handles.get(id(r)) for r in item.renderers]
            arts = [a for a in arts if a is not None]
            label = _legend_label(item)
            if arts and label:
                handles.append(arts[0])
                labels.append(label)
        if not handles:
            continue
        lfs = _px(lg.label_text_font_size, 13.0) * PT * 0.85
        if lg in top_legends:  # above the plot, in a row, like bokeh's legend laid out "above"
            ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.0 + 18 / fh), ncol=len(handles),
                      fontsize=lfs, frameon=False, borderaxespad=0.2, handlelength=1.0)
        elif lg in side_legends:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0 + (cb_x - (x + left + fw)) / fw, 1.0),
                      fontsize=lfs, frameon=False, borderaxespad=0.2)
        else:
            loc = lg.location if isinstance(lg.location, str) else "top_right"
            ax.legend(handles, labels, loc=_LOCS.get(loc, "best"), fontsize=lfs, framealpha=0.85)
    return ax


def _log_axis(axis) -> None:
    """Readable log ticks: 10^k for big or small decades, plain numbers otherwise; 1-2-5 ticks labelled when
    the axis spans under two decades (otherwise matplotlib labels only odd minor ticks, in a larger font)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def fmt(v, _pos=None):
        if v <= 0 or not math.isfinite(v):
            return ""
        e = math.log10(v)
        if abs(e - round(e)) < 1e-9 and (v >= 1e4 or v < 1e-3):
            return f"$10^{{{int(round(e))}}}$"
        return f"{v:.3g}"

    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and math.log10(hi / lo) < 2:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_formatter(NullFormatter())


def _grouped_legend(drawer, item) -> list:
    """``(label, handle)`` per distinct value for a legend item whose label is a data field (bokeh groups those in
    the browser), with a square of the colour of the value's first glyph; [] for an ordinary item."""
    from matplotlib.patches import Patch

    lab = item.label
    fieldname = lab.get("field") if isinstance(lab, dict) else getattr(lab, "field", None)
    if not fieldname or not item.renderers:
        return []
    r = item.renderers[0]
    data = dict(r.data_source.data)
    values = list(data.get(fieldname, []))
    n = len(values)
    if not n:
        return []
    cols = drawer._rgba(r.glyph, "fill_color", "fill_alpha", data, n)
    out, seen = [], set()
    for i, v in enumerate(values):
        if v not in seen:
            seen.add(v)
            out.append((str(v), Patch(facecolor=cols[i], edgecolor="none")))
    return out


def _legend_label(item) -> str:
    lab = item.label
    if lab is None:
        return ""
    if isinstance(lab, dict):
        return str(lab.get("value", lab.get("field", "")))
    return str(getattr(lab, "value", getattr(lab, "field", lab)))


def render_png(layout: _Node, path: Path, header: str = "", scale: float = 1.5) -> tuple[int, int]:
    """Draw the figures of ``layout`` with matplotlib into a PNG at ``path``; returns its (width, height) in
    pixels. ``scale``: pixels per bokeh pixel (1.5 keeps text crisp at about bokeh's size)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import textwrap

    pad = 10
    w, h = layout.size
    lines = textwrap.wrap(header, max(20, int((w - 10) / 7.0)))[:3] if header else []
    head = 18 * len(lines) + (8 if lines else 0)
    W_, H_ = w + 2 * pad, h + 2 * pad + head
    mfig = Figure(figsize=(W_ / 100, H_ / 100), dpi=100, facecolor="white")
    if lines:
        mfig.text(pad / W_, 1 - (pad + 2) / H_, "\n".join(lines), ha="left", va="top", fontsize=12 * PT,
                  color="#333333", linespacing=1.25)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
        for bfig, x, y, fw, fh in layout.place(pad, pad + head):
            _draw_figure(mfig, bfig, x, y, fw, fh, W_, H_)
        FigureCanvasAgg(mfig)
        mfig.savefig(path, format="png", dpi=100 * scale, facecolor="white")
    return int(round(W_ * scale)), int(round(H_ * scale))
