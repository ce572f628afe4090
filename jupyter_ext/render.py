"""HTML/SVG views of a compile result and a run's task states, for the ipywidgets widget.

Presentation only: the graph comes from the compiled spec (`upstream`, `inputs`); layers are
the longest path from a source, ordered within a layer by the mean position of their parents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from compiler.model.units import format_duration

# The same colours as the JupyterLab extension (jupyter_ext/src/model.ts, style/base.css).
TASK_COLORS = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
]
STATUS_COLORS = {
    "waiting": "#9e9e9e",
    "running": "#1976d2",
    "retrying": "#f57c00",
    "cached": "#7e57c2",
    "done": "#388e3c",
    "failed": "#d32f2f",
    "upstream_failed": "#e65100",
}

NODE_H = 44
GAP_X = 24
GAP_Y = 46
CHAR_W = 7.2
MARGIN = 8


def status_text(state: Mapping[str, Any] | None) -> str:
    """'done · 1.2 s', 'running', ... (as the JupyterLab badges say it)."""
    if not state or not state.get("status"):
        return ""
    label = str(state["status"]).replace("_", " ")
    duration = format_duration(state.get("duration"))
    # A cache hit's duration is the lookup, not the task: leave it out.
    shown = state["status"] not in ("running", "cached", "waiting")
    return f"{label} · {duration}" if duration and shown else label


def _layers(tasks: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rank: dict[str, int] = {}
    for task in tasks:  # the spec lists tasks in topological order
        rank[task["name"]] = 1 + max((rank[u] for u in task["upstream"] if u in rank), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for task in tasks:
        layers[rank[task["name"]]].append(task["name"])
    upstream = {t["name"]: t["upstream"] for t in tasks}
    position: dict[str, float] = {}
    for layer in layers:  # barycentre ordering: fewer crossings, stable for ties
        layer.sort(
            key=lambda n: (
                sum(position.get(u, 0) for u in upstream[n]) / max(1, len(upstream[n]))
                if upstream[n]
                else -1
            )
        )
        for i, name in enumerate(layer):
            position[name] = i
    return layers


def _subtitle(task: Mapping[str, Any], state: Mapping[str, Any] | None) -> str:
    if state:
        return status_text(state)
    cells = [c["cell_index"] for c in task["code"]]
    if not cells:
        return ""
    return f"cell {cells[0]}" if len(cells) == 1 else f"cells {cells[0]}–{cells[-1]}"


def render_svg(
    spec: Mapping[str, Any] | None, states: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The DAG as an SVG string (empty string when there is no spec)."""
    if not spec or not spec.get("tasks"):
        return ""
    states = states or {}
    tasks = list(spec["tasks"])
    by_name = {t["name"]: t for t in tasks}
    color = {t["name"]: TASK_COLORS[i % len(TASK_COLORS)] for i, t in enumerate(tasks)}
    width_of = {
        t["name"]: max(
            96.0,
            28 + CHAR_W * max(len(t["name"]), 0.85 * len(_subtitle(t, states.get(t["name"])))),
        )
        for t in tasks
    }
    layers = _layers(tasks)
    layer_widths = [sum(width_of[n] for n in layer) + GAP_X * (len(layer) - 1) for layer in layers]
    total_w = max(layer_widths) + 2 * MARGIN
    total_h = len(layers) * NODE_H + (len(layers) - 1) * GAP_Y + 2 * MARGIN
    box: dict[str, tuple[float, float, float]] = {}  # name -> x, y, width
    for row, (layer, layer_w) in enumerate(zip(layers, layer_widths, strict=True)):
        x = (total_w - layer_w) / 2
        y = MARGIN + row * (NODE_H + GAP_Y)
        for name in layer:
            box[name] = (x, y, width_of[name])
            x += width_of[name] + GAP_X

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="kiln-Dag" width="{total_w:.0f}" '
        f'height="{total_h:.0f}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" '
        'style="max-width:100%;height:auto;font-family:sans-serif">',
        '<defs><marker id="kiln-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for task in tasks:
        for up in task["upstream"]:
            if up not in box:
                continue
            ux, uy, uw = box[up]
            dx, dy, dw = box[task["name"]]
            x1, y1 = ux + uw / 2, uy + NODE_H
            x2, y2 = dx + dw / 2, dy
            names = [n for n, producer in by_name[task["name"]]["inputs"].items() if producer == up]
            dash = "" if names else ' stroke-dasharray="4 3"'
            mid = (y1 + y2) / 2
            down = escape(task["name"])
            parts.append(
                f'<g class="kiln-Dag-edge" data-from="{escape(up)}" data-to="{down}">'
                f"<title>{escape(up)} → {escape(task['name'])}: "
                f"{escape(', '.join(names) or 'after')}</title>"
                f'<path d="M {x1:.1f} {y1:.1f} C {x1:.1f} {mid:.1f} {x2:.1f} {mid:.1f} '
                f'{x2:.1f} {y2 - 1:.1f}" fill="none" stroke="#999" stroke-width="1.4"{dash} '
                'marker-end="url(#kiln-arrow)"/>'
            )
            if names:
                label = ", ".join(names)
                label = label if len(label) <= 18 else label[:16] + "…"
                # On the curve at t=0.6, nearer the reader: sibling edges' labels spread apart.
                lx = 0.352 * x1 + 0.648 * x2
                ly = 0.064 * y1 + 0.72 * mid + 0.216 * y2
                parts.append(
                    f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="middle" '
                    'font-size="10" fill="#666" paint-order="stroke" stroke="white" '
                    f'stroke-width="3">{escape(label)}</text>'
                )
            parts.append("</g>")
    for task in tasks:
        name = task["name"]
        x, y, w = box[name]
        state = states.get(name)
        status = (state or {}).get("status")
        stroke = STATUS_COLORS.get(str(status), "#bbb") if status else "#bbb"
        stroke_w = 2 if status else 1
        sub_fill = STATUS_COLORS.get(str(status), "#777") if status else "#777"
        parts.append(
            f'<g class="kiln-Dag-node" data-task="{escape(name)}" '
            f'data-status="{escape(str(status or ""))}">'
            f"<title>{escape(name)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{NODE_H}" rx="6" '
            f'fill="white" stroke="{stroke}" stroke-width="{stroke_w}"/>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="6" height="{NODE_H}" rx="3" '
            f'fill="{color[name]}"/>'
            f'<text x="{x + 14:.1f}" y="{y + 18:.1f}" font-size="12" font-weight="600" '
            f'fill="#222">{escape(name)}</text>'
            f'<text x="{x + 14:.1f}" y="{y + 34:.1f}" font-size="10" fill="{sub_fill}">'
            f"{escape(_subtitle(task, state))}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_diagnostics(diagnostics: Sequence[Mapping[str, Any]]) -> str:
    """The diagnostics as an HTML list, each with its cell and line."""
    if not diagnostics:
        return ""
    colors = {"error": "#d32f2f", "warning": "#f57c00", "info": "#1976d2"}
    items = []
    for d in diagnostics:
        place = "notebook"
        if d.get("cell_index") is not None:
            place = f"cell {d['cell_index']}"
            if d.get("line") is not None:
                place += f", line {d['line']}"
        color = colors.get(str(d.get("severity")), "#777")
        items.append(
            f'<li style="border-left:3px solid {color};padding:2px 6px;margin:2px 0;'
            f'list-style:none"><b style="color:{color}">{escape(str(d.get("severity")))}</b> '
            f'<span style="color:#777">{escape(place)}</span> {escape(str(d.get("message")))}'
            "</li>"
        )
    return f'<ul class="kiln-Diagnostics" style="padding:0;margin:4px 0">{"".join(items)}</ul>'


def render_run(run: Mapping[str, Any] | None) -> str:
    """One line about a run: status, tasks done, dashboard link, failed tasks with their place."""
    if not run:
        return ""
    tasks = run.get("tasks") or {}
    done = sum(1 for t in tasks.values() if t.get("status") in ("done", "cached"))
    status = str(run.get("status", ""))
    color = {"succeeded": "#388e3c", "failed": "#d32f2f"}.get(status, "#1976d2")
    parts = [
        f'<span style="background:{color};color:white;border-radius:8px;padding:1px 6px;'
        f'font-size:11px;text-transform:uppercase">{escape(status)}</span> '
        f"run {escape(str(run.get('run_id', ''))[:8])} · {done}/{len(tasks)} tasks done"
    ]
    if run.get("dashboard"):
        url = escape(str(run["dashboard"]), quote=True)
        parts.append(f' · <a href="{url}" target="_blank">Dask dashboard</a>')
    if run.get("output_notebook"):
        parts.append(f" · output notebook: <code>{escape(str(run['output_notebook']))}</code>")
    for name, state in tasks.items():
        error = state.get("error")
        if state.get("status") == "failed" and error:
            where = ""
            if error.get("line"):
                where = f" (cell {error.get('cell_index')}, line {error['line']})"
            parts.append(
                f'<div style="color:#d32f2f;font-family:monospace">{escape(name)}: '
                f"{escape(str(error.get('ename', 'Error')))}: "
                f"{escape(str(error.get('evalue', '')))}{escape(where)}</div>"
            )
    if run.get("error"):
        parts.append(f'<div style="color:#d32f2f">{escape(str(run["error"]))}</div>')
    return "".join(parts)
