"""The package's shape: layers that import only downwards, no import cycles (lazy and TYPE_CHECKING
imports included), no module over ~300 lines without a reason written at its top, methods that
never import the system, and the flat module names of before the layers still importing."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "clamu_helpers"
MAX_LINES = 300
REASON = re.compile(r"over 300 lines", re.IGNORECASE)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its source (every import statement)."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        base = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                src = node.module or ""
                if node.level:
                    b = base
                    for _ in range(node.level - 1):
                        b = b.rpartition(".")[0]
                    src = f"{b}.{node.module}" if node.module else b
                targets = [src] + [f"{src}.{a.name}" for a in node.names]
            else:
                continue
            # importing one's own package (its __init__) is how submodules register: not a cycle
            graph[m].update(t for t in targets if t in mods and t != m and not m.startswith(t + "."))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    found = cycles(import_graph())
    assert not found, f"import cycles in clamu_helpers: {found}"


def test_methods_never_import_the_system():
    graph = import_graph()
    offenders = sorted(m for m, deps in graph.items()
                       if m.startswith("clamu_helpers.methods") and "clamu_helpers.unlearning.system" in deps)
    assert not offenders, f"methods see a MethodContext, not the system: {offenders}"


def test_long_modules_say_why_at_their_top():
    long_without_reason = []
    for m, p in sorted(_modules().items()):
        text = p.read_text()
        n = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_LINES and not REASON.search(doc):
            long_without_reason.append(f"{m} ({n} lines)")
    assert not long_without_reason, ("modules over 300 lines need a reason in their docstring "
                                      f"('Over 300 lines ...'), or a split: {long_without_reason}")


def test_every_method_declares_typed_parameters():
    """Each registered method's keywords are the fields of its Params dataclass: the defaults
    build it, its JSON rebuilds an equal method, an unknown keyword names the method and lists the
    parameters, and the fast test parameters are among them."""
    import dataclasses

    import pytest

    from clamu_helpers.methods import METHODS, Params, get_method
    for name, cls in sorted(METHODS.items()):
        assert dataclasses.is_dataclass(cls.Params) and issubclass(cls.Params, Params), name
        assert cls.reference, f"{name} declares no reference"
        assert set(cls.test_params) <= set(cls.Params.names()), name
        m = get_method(name)
        assert m.params == cls.Params().to_json() and get_method(name, **m.params).params == m.params
        with pytest.raises(TypeError, match=rf"method '{name}' has no parameter 'no_such_knob'.*parameters:"):
            get_method(name, no_such_knob=1)
        if cls.clustered:
            with pytest.raises(ValueError, match="clusters"):
                get_method(name, clusters=0)


def test_methods_command_lists_every_method_with_its_parameters(capsys):
    import json

    from clamu_helpers.__main__ import main
    from clamu_helpers.methods import METHODS
    assert main(["methods", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(METHODS)
    assert rows["consensus"]["params"]["ks"] == [1, 2, 3] and rows["sift-merge"]["control_of"] == "sift"


def test_methods_read_typed_parameters_not_the_json():
    """``method.params`` is the JSON that is saved and hashed; methods read the typed, declared
    ``self.p`` (and ``resolve``/``chosen_value`` for what is served)."""
    readers = sorted(f"{m}:{i + 1}" for m, p in _modules().items()
                     for i, line in enumerate(p.read_text().splitlines())
                     if re.search(r"self\.params(\[|\.get\()", line))
    assert not readers, f"read self.p, not self.params[...]: {readers}"


def _layer(module: str) -> str | None:
    """The layer (subpackage of ``_layout.LAYERS``) a package module belongs to, or None for the
    package's own ``__init__``, ``__main__`` and ``_layout``."""
    from clamu_helpers._layout import LAYERS
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_layers_import_only_downwards():
    """The flow of the package is its layout: a module imports from its own layer or those
    below it (``_layout.LAYERS``, bottom up), never from a layer above."""
    from clamu_helpers._layout import LAYERS
    rank = {name: i for i, name in enumerate(LAYERS)}
    graph = import_graph()
    upward = sorted(f"{m} → {d}" for m, deps in graph.items() for d in deps
                    if _layer(m) and _layer(d) and rank[_layer(d)] > rank[_layer(m)])
    assert not upward, f"imports from a higher layer: {upward}"
    assert not [m for m in _modules() if m.count(".") == 1 and _layer(m) is None
                and m.split(".")[1] not in ("__main__", "_layout")], "a module outside every layer"


def test_the_layer_check_finds_an_upward_import():
    """The check above would fail on one upward import (a core module importing the system)."""
    from clamu_helpers._layout import LAYERS
    rank = {name: i for i, name in enumerate(LAYERS)}
    graph = {**import_graph(), "clamu_helpers.core.ledger": {"clamu_helpers.unlearning.system"}}
    assert [m for m, deps in graph.items() for d in deps
            if _layer(m) and _layer(d) and rank[_layer(d)] > rank[_layer(m)]] == ["clamu_helpers.core.ledger"]


def test_flat_names_of_before_the_layers_are_the_same_modules():
    """``import clamu_helpers.ledger`` and ``from clamu_helpers import experiments`` (the flat
    layout the notebooks and users' code were written against) give the layer's module itself,
    with its own name and spec; the package's ``finetune`` stays the function."""
    import importlib
    import pickle

    import clamu_helpers
    from clamu_helpers._layout import flat_names
    names = flat_names()
    assert len(names) >= 43 and names["clamu_helpers.ledger"] == "clamu_helpers.core.ledger"
    for old, new in names.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert module.__name__ == module.__spec__.name == new
    from clamu_helpers import experiments, ledger
    from clamu_helpers.reproduction import experiments as experiments_
    assert experiments is experiments_ and ledger.MergeLedger is clamu_helpers.MergeLedger
    assert callable(clamu_helpers.finetune) and clamu_helpers.finetune.__module__ == "clamu_helpers.training.finetune"
    # a pickle written under the flat name still loads (pickle imports the module by name)
    flat = pickle.dumps(ledger.MergeLedger, protocol=0).replace(b"clamu_helpers.core.ledger", b"clamu_helpers.ledger")
    assert pickle.loads(flat) is ledger.MergeLedger


def test_settings_are_discovered_like_methods():
    """Every module of ``settings/`` that is not machinery is a family with a ``register()``,
    and every family's settings are registered without being listed anywhere."""
    import importlib
    import pkgutil

    import clamu_helpers.settings as S
    families = [m.name for m in pkgutil.iter_modules(S.__path__) if m.name not in S._MACHINERY]
    assert sorted(families) == ["authors", "images", "paper", "text"]
    assert all(callable(importlib.import_module(f"clamu_helpers.settings.{f}").register) for f in families)
    assert {"images-uniform", "reviews-by-movie", "fictitious-authors", "paper-tofu"} <= set(S.SETTINGS)
