"""The DAG as text: Mermaid (renders in GitHub, JupyterLab markdown) and Graphviz DOT."""

from __future__ import annotations

from typing import Any

from compiler.compile.tags import python_name


def _node_id(name: str) -> str:
    return "t_" + python_name(name)


def _edge_labels(spec: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    labels: dict[tuple[str, str], list[str]] = {}
    for task in spec["tasks"]:
        for up in task["upstream"]:
            labels[(up, task["name"])] = [n for n, p in task["inputs"].items() if p == up]
    return labels


def to_mermaid(spec: dict[str, Any]) -> str:
    lines = ["flowchart TD"]
    for task in spec["tasks"]:
        lines.append(f'    {_node_id(task["name"])}["{task["name"]}"]')
    for (up, down), names in _edge_labels(spec).items():
        label = f"|{', '.join(names)}|" if names else "|after|"
        lines.append(f"    {_node_id(up)} -->{label} {_node_id(down)}")
    return "\n".join(lines) + "\n"


def to_dot(spec: dict[str, Any]) -> str:
    lines = [f'digraph "{spec["name"]}" {{', "    rankdir=TB;", "    node [shape=box];"]
    for task in spec["tasks"]:
        lines.append(f'    "{task["name"]}";')
    for (up, down), names in _edge_labels(spec).items():
        label = ", ".join(names) if names else "after"
        style = "" if names else ", style=dashed"
        lines.append(f'    "{up}" -> "{down}" [label="{label}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
