"""The package's folders are layers, and imports point down only (as in mitmproxy's own source).

From the bottom: the events every layer shares; the Harmony language; the APIs' wire formats;
what needs the request (client fixes, response repairs); the rewriting engine; the recording
format; the mitmproxy addon; the service addons; the command-line tools. The pure layers import
no mitmproxy, so they can be read, tested and benchmarked without a proxy.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "addon" / "harmony_filter"
LAYERS = [
    "events",
    "harmony",
    "api",
    "fixes",
    "rewrite",
    "recordings",
    "proxy",
    "service",
    "tools",
]
"""Bottom first: a module may import its own layer and the ones before it."""
PURE = {"events", "harmony", "api", "fixes", "rewrite"}
"""Layers that must not import mitmproxy (nor, being low, anything above them)."""


def layer_of(module: str) -> str:
    """`harmony_filter.api.sse` -> `api`; the package's root modules are their own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found.add(module)
    return found


MODULES = sorted(path for path in PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_known_layer() -> None:
    strays = [
        module_name(path)
        for path in MODULES
        if layer_of(module_name(path)) not in ("", *LAYERS)
        or (layer_of(module_name(path)) == "" and path.stem not in ("__init__", "events"))
    ]
    assert not strays, f"modules outside the layers {LAYERS}: {strays}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_point_down(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module) or "events"
    rank = LAYERS.index(layer) if module != "harmony_filter" else len(LAYERS)
    for name in imports(path):
        if name == "mitmproxy" or name.startswith("mitmproxy."):
            assert layer not in PURE, f"{module} (pure layer {layer}/) imports {name}"
        if not name.startswith("harmony_filter.") or name == "harmony_filter":
            continue
        target = layer_of(name)
        assert target in LAYERS, f"{module} imports {name}, in no layer"
        assert LAYERS.index(target) <= rank, (
            f"{module} ({layer}/) imports {name} ({target}/), a layer above it"
        )


def test_the_check_resolves_relative_imports() -> None:
    """The import parser resolves relative imports (else the layer test would pass vacuously)."""
    decoder = PACKAGE / "harmony" / "decoder.py"
    assert "harmony_filter.events" in imports(decoder)
    stream = PACKAGE / "rewrite" / "stream_rewriter.py"
    assert "harmony_filter.api.sse" in imports(stream)
