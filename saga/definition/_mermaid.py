"""Draw a definition as a Mermaid flowchart: forward edges and compensation edges.

Forward edges are solid and follow ``depends_on``. Every compensatable step has an
"undo" node; dashed compensation edges run from a step to its undo node and between undo
nodes against the forward direction, which is the order compensations run in. Node
shapes come from the kind's traits: rectangle = compensatable, hexagon = pivot, stadium =
retriable, parallelogram = wait. Parallel groups are subgraphs; a condition is shown as ``if ...``.
"""

from __future__ import annotations

from saga.definition._model import SagaDefinition, Step


def _text(value: str) -> str:
    return value.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _label(step: Step) -> str:
    lines = [step.name]
    if step.traits.waits_for_signal:
        lines.append(f"wait for {step.signal}")
    else:
        lines.append(f"{step.participant}: {step.command}")
    if step.traits.pivot:
        lines.append("(pivot)")
    if step.when is not None:
        lines.append(f"if {step.when}")
    return "<br/>".join(_text(line) for line in lines)


def _node(step: Step) -> str:
    left, right = step.traits.shape
    return f"{step.name}{left}{_label(step)}{right}"


def to_mermaid(definition: SagaDefinition) -> str:
    """Return a Mermaid ``flowchart`` of ``definition`` (what ``saga graph NAME`` prints)."""
    by_name = {s.name: s for s in definition.steps}
    out = [
        "flowchart TD",
        f"    %% {definition.name} v{definition.version} ({definition.content_hash[:12]})",
        "    start((start))",
        "    done((done))",
    ]
    groups: dict[str, list[Step]] = {}
    for step in definition.steps:
        if step.group is None:
            out.append(f"    {_node(step)}")
        else:
            groups.setdefault(step.group, []).append(step)
    for group, members in groups.items():
        out.append(f'    subgraph {group}["parallel: {_text(group)}"]')
        out.extend(f"        {_node(step)}" for step in members)
        out.append("    end")
    depended_on = {dep for s in definition.steps for dep in s.depends_on}
    for step in definition.steps:
        if not step.depends_on:
            out.append(f"    start --> {step.name}")
        out.extend(f"    {dep} --> {step.name}" for dep in step.depends_on)
        if step.name not in depended_on:
            out.append(f"    {step.name} --> done")
    for step in definition.steps:
        if not step.traits.compensatable:
            continue
        undo = f"{step.name}__undo"
        out.append(f'    {undo}["undo {_text(step.name)}<br/>{_text(step.compensation or "")}"]')
        out.append(f"    {step.name} -. compensate .-> {undo}")
        out.extend(
            f"    {undo} -.-> {target}__undo" for target in _compensatable_ancestors(step, by_name)
        )
    return "\n".join(out) + "\n"


def _compensatable_ancestors(step: Step, by_name: dict[str, Step]) -> list[str]:
    # The nearest compensatable steps upstream, looking through wait steps.
    found: list[str] = []
    todo = list(step.depends_on)
    seen: set[str] = set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if by_name[name].traits.compensatable:
            found.append(name)
        else:
            todo.extend(by_name[name].depends_on)
    return found
