"""The package as a whole: what ``import asignals`` loads, what it exports,
and how its modules depend on each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asignals

PACKAGE = Path(asignals.__file__).parent
# The signal core: what a blinker user needs. It must not reach the web parts.
CORE = {
    "__init__",
    "_types",
    "_exceptions",
    "_utilities",
    "_options",
    "_bookkeeping",
    "_dispatch",
    "_delivery",
    "_signal",
    "_lifecycle",
    "observers",
    "testing",
}


def loaded_after(code: str) -> set[str]:
    """The top-level packages loaded by ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in output.split()}


@pytest.mark.parametrize(
    "code",
    [
        "import asignals",
        "from asignals import Signal, Namespace, signal",
        "from asignals import ANY, NamedSignal, request_started, observe, AsignalsError",
        "import asignals.testing, asignals.observers",
    ],
)
def test_the_core_loads_neither_the_web_parts_nor_an_event_loop(code: str) -> None:
    """A blinker user's sync sends need none of them; awaited sends load
    asyncio's or trio's dispatch when first made, on a loop that is already
    there."""
    loaded = loaded_after(code)
    assert "asignals" in loaded
    assert not loaded & {"starlette", "jinja2", "markupsafe", "anyio", "asyncio", "trio"}


def test_a_sync_send_loads_no_event_loop_and_an_awaited_one_works() -> None:
    loaded = loaded_after(
        "import asignals\n"
        "sig = asignals.Signal()\n"
        "sig.connect(lambda sender, **kwargs: kwargs, weak=False)\n"
        "assert [v for _, v in sig.send(1, a=1, _request_id=2)] == [{'a': 1, '_request_id': 2}]\n"
        "assert 'asyncio' not in sys.modules\n"
        "import asyncio\n"
        "assert asyncio.run(sig.send_async(1, _concurrent=True))[0][1] == {}\n"
    )
    assert "asyncio" in loaded


def test_the_web_parts_load_when_first_used() -> None:
    loaded = loaded_after("from asignals import install, request_started, current_app")
    assert "starlette" in loaded


def test_every_name_in_all_is_importable() -> None:
    for name in asignals.__all__:
        assert getattr(asignals, name) is not None, name
    assert sorted(asignals.__all__) == sorted(set(asignals.__all__))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        asignals.nothing  # type: ignore[attr-defined]  # noqa: B018


def _top_level_imports(module: str) -> set[str]:
    """The asignals modules ``module`` imports when it is loaded: at its
    top level, not inside functions or ``if TYPE_CHECKING:``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                imported.add(node.module.split(".")[0])
            else:
                imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("asignals."):
            imported.add((node.module or "").split(".")[1])
    return imported


MODULES = sorted(path.stem for path in PACKAGE.glob("*.py"))


def test_the_core_imports_nothing_from_the_web_modules() -> None:
    for module in CORE:
        assert _top_level_imports(module) <= CORE, module


def test_there_is_no_import_cycle() -> None:
    graph = {module: _top_level_imports(module) - {"__init__"} for module in MODULES}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        if module in done:
            return
        visiting.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in MODULES:
        visit(module)


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    code = "; ".join(f"import asignals.{m}" for m in MODULES if m != "__init__")
    for module in MODULES:
        if module == "__init__":
            continue
        subprocess.run(
            [sys.executable, "-c", f"import asignals.{module}; {code}"],
            check=True,
            timeout=60,
        )
