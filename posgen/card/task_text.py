"""Card sections on what POSGEN measures and on each config's task, with worked examples.

The worked example of a config is computed from its spec: the first train row, and the
target ``t = w + 2`` recomputed from its operands, e.g. (cot, m = 17, k = 3, j = 1)
``x_6 = (x_0 + x_3 + x_4 + x_5) mod 17``.
"""

from __future__ import annotations

from posgen.card.diagram import MAX_DRAWN_WINDOW, dependency_diagram, diagram_length
from posgen.card.markdown import code, table
from posgen.generator import generate_rows
from posgen.ops import get_op
from posgen.spec import TaskSpec
from posgen.store.manifest import Manifest
from posgen.tasks import dependencies

FAR_RULES: dict[str, tuple[str, str]] = {
    "recursive": ("x_{t-w} .. x_{t-k-1} (just before the near ones)", "bounded by w"),
    "cot": ('x_0 .. x_{j-1} (the fixed "question")', "grows like t"),
    "semirecursive": ("x_p .. x_{p+j-1}, p = floor((t - w) / 2)", "grows like t / 2"),
}

MEASURES = """\
## What POSGEN measures, and why

POSGEN (Wang et al., *Resonance RoPE*, ACL Findings 2024) is made for **train-short-test-long
(TSTL)** studies of position embeddings: train on rows of length L, evaluate on length L' > L.
In ordinary long-context tests later tokens are also *harder*, so a failure at long range can
be blamed on the harder tokens or on the unseen positions. POSGEN removes the first cause:
**every generated token is computed by the same function h from the same number (w = j + k)
of earlier tokens, wherever it stands**, so the per-token difficulty is fixed and an accuracy
drop past position L is due to the positions alone.

Notation: tokens x_0, x_1, ... in {0, ..., m-1}; k near operands x_{t-k} .. x_{t-1}; j far
operands placed by the task; w = j + k. The first w tokens of a row are its *seed window*
(given, never scored); every later token is x_t = h(far operands, near operands)."""


def rules_table(manifest: Manifest) -> str:
    """One row per config: its task's far operands and how far back they reach."""
    rows = []
    for name, entry in manifest.configs.items():
        spec = entry.spec
        rule, reach = FAR_RULES.get(spec.task, ("see posgen.tasks", "-"))
        rows.append([name, spec.task, rule, "x_{t-k} .. x_{t-1}", reach])
    return table(["config", "task", "far operands of x_t", "near operands", "far look-back"], rows)


def worked_example(spec: TaskSpec) -> str:
    """The target ``t = w + 2`` of the first train row, recomputed from its operands."""
    w = spec.window
    t = min(w + 2, spec.train_length - 1)
    row = generate_rows(spec, "train", 0, 1)[0].astype(int).tolist()
    deps = dependencies(spec.task, t, spec.near, spec.far).tolist()
    operands = [f"x_{p}" for p in deps]
    values = [row[p] for p in deps]
    op = get_op(spec.op)
    if op.additive:
        result = (
            f"x_{t} = ({' + '.join(operands)}) mod {spec.modulus} "
            f"= ({' + '.join(map(str, values))}) mod {spec.modulus} "
            f"= {sum(values)} mod {spec.modulus} = {row[t]}"
        )
    else:
        result = f"x_{t} = h({', '.join(operands)}) = h({', '.join(map(str, values))}) = {row[t]}"
    return (
        f"seed window x_0..x_{w - 1} = {' '.join(map(str, row[:w]))}; "
        f"x_0..x_{t} = {' '.join(map(str, row[: t + 1]))}\n{result}   ({op.description})"
    )


def config_section(name: str, spec: TaskSpec) -> str:
    """A config's rule, worked example and dependency picture."""
    rule, reach = FAR_RULES.get(spec.task, ("see posgen.tasks", "-"))
    parts = [
        f"### `{name}`: {spec.task} (m = {spec.modulus}, k = {spec.near}, j = {spec.far}, "
        f"w = {spec.window}, h = {spec.op})",
        "",
        f"Far operands: {rule}; near operands: x_{{t-k}} .. x_{{t-1}}; far look-back {reach}.",
        "Worked example (first train row):",
        "",
        code(worked_example(spec), "text"),
        "",
    ]
    if spec.window <= MAX_DRAWN_WINDOW:
        length = diagram_length(spec.window, spec.train_length)
        parts += [
            "Which earlier positions feed a target (F far, n near, x target):",
            "",
            code(dependency_diagram(spec.task, spec.near, spec.far, length), "text"),
        ]
    else:
        parts.append(f"(The window w = {spec.window} is too wide to draw.)")
    return "\n".join(parts)


def tasks_section(manifest: Manifest) -> str:
    """The tasks of this folder: the rules table, then one subsection per config."""
    parts = [
        "## The tasks",
        "",
        "The tasks differ only in *which earlier positions feed position t*:",
        "",
        rules_table(manifest),
    ]
    for name, entry in manifest.configs.items():
        parts += ["", config_section(name, entry.spec)]
    return "\n".join(parts)
