"""Measuring a notebook's views from the page (issue 13, browser checks of layout).

The page is JupyterLab at 1,400 x 1,000 with the file browser open (the narrow case: a notebook column of about
900 px). For one cell's output area the script below returns what a teacher would notice first:

- ``over``: visible elements whose right edge passes the output area's (the notebook column's) right edge, outermost
  first. Elements inside a scroll box that itself fits (a code listing with ``overflow-x: auto``) do not count.
- ``clipped``: descriptions, labels, buttons and slider readouts whose text is wider than their box
  (``scrollWidth > clientWidth``: ipywidgets cuts them with an ellipsis), and dropdowns whose chosen option is
  wider than the box.
- ``figures``: every bokeh canvas (they live in shadow roots) with its size and how many of its pixels are
  clearly coloured (not white, grey or black): an empty figure has axes and grid but no coloured glyphs.
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
    const ctx = document.createElement('canvas').getContext('2d');
    const result = {sidebar: !!document.querySelector('.jp-FileBrowser:not(.lm-mod-hidden)') &&
                             r(document.querySelector('.jp-FileBrowser')).width > 100,
                    notebook: [notebook.left, notebook.right], outputs: []};
    for (const out of outs) {
        const column = r(out);
        const scrollers = [...out.querySelectorAll('*')].filter(e => {
            const s = getComputedStyle(e);
            return /auto|scroll/.test(s.overflowX) && r(e).right <= column.right + 1;
        });
        const inScroller = e => scrollers.some(s => s !== e && s.contains(e));
        const light = [...out.querySelectorAll('*')].filter(visible);
        const hosts = deep(out, '*').filter(e => !out.contains(e) && visible(e) && (e.tagName === 'CANVAS'));
        const overflowing = light.concat(hosts).filter(e => r(e).right > column.right + 1 && !inScroller(e));
        const outer = overflowing.filter(e => !overflowing.some(o => o !== e && o.contains(e)));
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
        // a bokeh figure draws on stacked canvas layers in one bk-Canvas host (the primary layer, overlays):
        // it is drawn when any of its layers has coloured pixels
        const byHost = new Map();
        for (const c of deep(out, 'canvas')) {
            const host = c.getRootNode().host || c.parentNode;
            if (!byHost.has(host)) byHost.set(host, []);
            byHost.get(host).push(c);
        }
        const figures = [...byHost.values()].map(layers => {
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
            return {w: Math.round(b.width), h: Math.round(b.height), left: Math.round(b.left),
                    right: Math.round(b.right), layers: layers.length, coloured, colours};
        }).filter(f => f.w >= 60 && f.h >= 40);
        result.outputs.push({
            column: [column.left, column.right], height: column.height,
            widgets: out.querySelectorAll('.jupyter-widgets, .widget-box').length, canvases: figures.length,
            html: !!out.querySelector('.jp-RenderedHTMLCommon') && !out.querySelector('.jupyter-widgets'),
            over: outer.slice(0, 8).map(e => name(e) + ` right=${Math.round(r(e).right)}`), clipped, figures,
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
