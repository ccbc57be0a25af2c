"""Measuring a notebook's views from the page (issue 13, browser checks of layout).

The page is JupyterLab at 1,400 x 1,000 with the file browser open (the narrow case: a notebook column of about
900 px). For one cell's output area the script below returns what a teacher would notice first:

- ``over``: visible elements whose right edge passes the output area's (the notebook column's) right edge, outermost
  first, and widget boxes inside the column whose content is wider than they are (they clip it or scroll sideways).
  Code listings (``<pre>``) that fit and scroll sideways do not count.
- ``clipped``: descriptions, labels, buttons and slider readouts whose text is wider than their box
  (``scrollWidth > clientWidth``: ipywidgets cuts them with an ellipsis), and dropdowns whose chosen option is
  wider than the box.
- ``figures``: every bokeh figure (canvas layers in shadow roots): its size, the colours painted on its layers, and,
  from the plot view in ``Bokeh.index``, how many rows of data its visible renderers hold. A figure is empty when
  only the background is painted or no visible renderer has data.
"""

MEASURE = r"""(cellIndex) => {
    const panel = window.jupyterapp.shell.currentWidget;
    const cell = panel.content.widgets[cellIndex];
    const outs = [...cell.node.querySelectorAll('.jp-OutputArea-output')]
        .filter(o => o.getBoundingClientRect().height > 2);
    const r = e => e.getBoundingClientRect();
    const visible = e => { const b = r(e); const s = getComputedStyle(e);
                           return b.width > 0 && b.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
    const deep = (root, sel, acc = []) => {  // querySelectorAll through open shadow roots (bokeh draws in them)
        root.querySelectorAll(sel).forEach(e => acc.push(e));
        root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, acc); });
        return acc;
    };
    const name = e => (e.tagName.toLowerCase() + '.' + String(e.className || '').trim().split(/\s+/).slice(0, 2)
                       .join('.')).slice(0, 70) + (e.textContent ? ' "' + e.textContent.trim().slice(0, 30) + '"' : '');
    const notebook = r(panel.content.node);
    const plots = new Map();  // bk-Canvas host element -> bokeh plot view
    if (window.Bokeh && window.Bokeh.index && window.Bokeh.index.all_views) {
        for (const v of window.Bokeh.index.all_views()) {
            if (v.canvas_view && v.renderer_views) plots.set(v.canvas_view.el, v);
        }
    }
    const ctx = document.createElement('canvas').getContext('2d');
    const result = {sidebar: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)') &&
                             r(document.querySelector('.jp-FileBrowser')).width > 100,
                    notebook: [notebook.left, notebook.right], outputs: []};
    for (const out of outs) {
        const column = r(out);
        // a code listing that fits and scrolls sideways is fine; its long lines are not an overflow
        const scrollers = [...out.querySelectorAll('pre, .wb-listing-pane')].filter(e => {
            const s = getComputedStyle(e);
            return /auto|scroll/.test(s.overflowX) && r(e).right <= column.right + 1;
        });
        const inScroller = e => scrollers.some(s => s !== e && s.contains(e));
        const light = [...out.querySelectorAll('*')].filter(visible);
        const hosts = deep(out, '*').filter(e => !out.contains(e) && visible(e) && (e.tagName === 'CANVAS'));
        const overflowing = light.concat(hosts).filter(e => r(e).right > column.right + 1 && !inScroller(e));
        const outer = overflowing.filter(e => !overflowing.some(o => o !== e && o.contains(e)));
        // a widget box inside the column whose content is wider than the box: it clips or scrolls sideways
        const squeezed = light.filter(e => e.matches('.widget-box, .widget-tab-contents, .lm-TabPanel-stackedPanel, ' +
                                                     '.widget-output, .jupyter-widgets-output-area, .widget-html'))
            .filter(e => !inScroller(e) && /auto|scroll|hidden/.test(getComputedStyle(e).overflowX) &&
                         e.scrollWidth > e.clientWidth + 1);
        const clipped = light.filter(e => e.matches('.widget-label, .widget-label-basic, .widget-readout, ' +
                                                    'button, .widget-button, .widget-toggle-button'))
            .filter(e => e.scrollWidth > e.clientWidth + 1)
            .map(e => (e.tagName === 'BUTTON' ? 'button ' : 'label ') + JSON.stringify(e.textContent.trim()) +
                      ` (${e.clientWidth} px shows ${e.scrollWidth} px)`);
        for (const sel of light.filter(e => e.tagName === 'SELECT' && !e.multiple)) {
            const opt = sel.options[sel.selectedIndex];
            if (!opt) continue;
            const s = getComputedStyle(sel);
            ctx.font = `${s.fontSize} ${s.fontFamily}`;
            const need = ctx.measureText(opt.text).width + parseFloat(s.paddingLeft) + parseFloat(s.paddingRight);
            if (need > sel.clientWidth + 1)
                clipped.push(`dropdown ${JSON.stringify(opt.text)} (${sel.clientWidth} px shows ${Math.ceil(need)} px)`);
        }
        // a bokeh figure draws on stacked canvas layers in one bk-Canvas host (the primary layer, overlays);
        // its plot view (from Bokeh's index) says which renderers it has and how many rows their data hold
        const byHost = new Map();
        for (const c of deep(out, 'canvas')) {
            const host = c.getRootNode().host || c.parentNode;
            if (!byHost.has(host)) byHost.set(host, []);
            byHost.get(host).push(c);
        }
        const figures = [...byHost.entries()].map(([host, layers]) => {
            const b = r(layers[0]);
            let coloured = 0, colours = 0;
            for (const c of layers) {
                try {
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    const seen = new Set();
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4) {
                        if (d[i + 3] < 40) continue;
                        const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
                        if (mx - mn > 60) n++;
                        if (seen.size < 5000) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                    }
                    coloured += n; colours = Math.max(colours, seen.size);
                } catch (err) { coloured = -1; }
            }
            const plot = plots.get(host);
            const glyphs = plot ? [...plot.renderer_views.values()]
                .filter(v => v.model.data_source !== undefined || v.model.type === 'GraphRenderer')
                .map(v => ({type: v.model.type, visible: v.model.visible,
                            rows: v.model.data_source ? v.model.data_source.get_length() : null})) : null;
            return {title: plot && plot.model.title ? String(plot.model.title.text || '') : null,
                    w: Math.round(b.width), h: Math.round(b.height), left: Math.round(b.left),
                    right: Math.round(b.right), layers: layers.length, coloured, colours,
                    data_rows: glyphs ? glyphs.filter(g => g.visible).reduce((a, g) => a + (g.rows || 0), 0) : null,
                    glyphs: glyphs ? glyphs.length : null};
        }).filter(f => f.w >= 60 && f.h >= 40);
        result.outputs.push({
            column: [column.left, column.right], height: column.height,
            widgets: out.querySelectorAll('.jupyter-widgets, .widget-box').length, canvases: figures.length,
            html: !!out.querySelector('.jp-RenderedHTMLCommon') && !out.querySelector('.jupyter-widgets'),
            over: outer.slice(0, 8).map(e => name(e) + ` right=${Math.round(r(e).right)}`).concat(
                squeezed.slice(0, 8).map(e => name(e) + ` shows ${e.clientWidth} of ${e.scrollWidth} px`)),
            clipped, figures,
        });
    }
    return result;
}"""

SOURCES = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .map(c => c.model.type === 'code' ? c.model.sharedModel.getSource() : null)"""

SCROLL_TO = """async (i) => {
    const nb = window.jupyterapp.shell.currentWidget.content;
    await nb.scrollToCell(nb.widgets[i], 'start');
}"""

# Cells whose outputs hold a widget view or a bokeh figure (so a lab nobody listed is still noticed).
RICH_CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.map((c, i) => {
    if (c.model.type !== 'code') return null;
    const outputs = c.model.outputs.toJSON();
    const rich = outputs.some(o => o.data && (o.data['application/vnd.jupyter.widget-view+json'] ||
                                               o.data['application/vnd.bokehjs_exec.v0+json']));
    return rich ? i : null;
}).filter(i => i !== null)"""

# ready: the cell's outputs hold a drawn view (a widget box, or canvases with pixels) and nothing is still running.
READY = """(i) => {
    const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
    const deep = (root, sel, acc = []) => {
        root.querySelectorAll(sel).forEach(e => acc.push(e));
        root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, acc); });
        return acc;
    };
    const area = cell.node.querySelector('.jp-OutputArea');
    if (!area || area.getBoundingClientRect().height < 5) return false;
    const canvases = deep(area, 'canvas').filter(c => c.getBoundingClientRect().width >= 60);
    const widgets = area.querySelectorAll('.jupyter-widgets .widget-box, .jupyter-widgets.widget-box, .widget-html');
    return canvases.length > 0 || widgets.length > 0 || !!area.querySelector('.jp-RenderedHTMLCommon');
}"""

# Code listings (<pre>) in a cell's HTML output: per listing, how many of its lines wrap onto a second visual line,
# how many do not start at the listing's left edge (right-aligned or centred text), the font, and whether a listing
# wider than its box can be scrolled sideways rather than running past the column.
LISTINGS = r"""(cellIndex) => {
    const cell = window.jupyterapp.shell.currentWidget.content.widgets[cellIndex];
    const out = [...cell.node.querySelectorAll('.jp-OutputArea-output')].find(o => o.querySelector('pre'));
    if (!out) return null;
    const column = out.getBoundingClientRect();
    return {column: [column.left, column.right], listings: [...out.querySelectorAll('pre')].map(pre => {
        const s = getComputedStyle(pre);
        const box = pre.getBoundingClientRect();
        const contentLeft = box.left + parseFloat(s.borderLeftWidth) + parseFloat(s.paddingLeft) - pre.scrollLeft;
        const text = pre.firstChild && pre.firstChild.nodeType === 3 ? pre.firstChild : null;
        const lines = [];
        if (text) {
            let start = 0;
            for (const line of text.data.split('\n')) {
                if (line.trim()) {
                    const range = document.createRange();
                    range.setStart(text, start); range.setEnd(text, start + line.length);
                    const rects = [...range.getClientRects()].filter(q => q.width > 0);
                    lines.push({line: line.trim().slice(0, 40), rows: new Set(rects.map(q => Math.round(q.top))).size,
                                left: rects.length ? Math.min(...rects.map(q => q.left)) : contentLeft});
                }
                start += line.length + 1;
            }
        }
        return {
            n_lines: lines.length, text: text ? text.data : pre.textContent,
            wrapped: lines.filter(l => l.rows > 1).map(l => l.line),
            not_left: lines.filter(l => Math.abs(l.left - contentLeft) > 1.5).map(l => l.line),
            monospace: /mono|courier|consol|menlo/i.test(s.fontFamily),
            font: s.fontFamily.slice(0, 60), text_align: s.textAlign, white_space: s.whiteSpace,
            right: box.right, overflow_x: s.overflowX, scroll_width: pre.scrollWidth, client_width: pre.clientWidth,
        };
    })};
}"""

# Replace the cell's listing output (kept in JupyterLab's own output element and stylesheet) with other HTML.
REPLACE_LISTING = r"""([cellIndex, html]) => {
    const cell = window.jupyterapp.shell.currentWidget.content.widgets[cellIndex];
    const out = [...cell.node.querySelectorAll('.jp-OutputArea-output')].find(o => o.querySelector('pre'));
    out.innerHTML = html;
}"""

# The tab bars of a cell's outputs (ipywidgets Tab, a Lumino TabBar): titles, and one tab to click.
TAB_TITLES = """(i) => [...window.jupyterapp.shell.currentWidget.content.widgets[i].node
    .querySelectorAll('.jp-OutputArea-output .widget-tab .lm-TabBar-tab')].map(t => t.textContent.trim())"""

TAB_HANDLE = """([i, k]) => [...window.jupyterapp.shell.currentWidget.content.widgets[i].node
    .querySelectorAll('.jp-OutputArea-output .widget-tab .lm-TabBar-tab')][k]"""
