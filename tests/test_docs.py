"""Every code block of the README and the documentation runs, or is
checked, as the page shows it; and the README stays short."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from docs_blocks import DOCS, PAGES, ROOT, Block, blocks, runs

import asignals

README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]

# Blocks that the page runner cannot check, and the test that does.
CHECKED_ELSEWHERE = {
    ("docs/errors.md", "AsignalsError (Exception)"): (
        "tests/test_docs.py",
        "test_the_error_tree_is_the_classes_tree",
    ),
    ("docs/observability.md", "trace: POST /order"): (
        "tests/test_otel.py",
        "test_the_docs_rendered_trace_is_what_the_example_prints",
    ),
}
# Files that pages quote in snippets, and the tests that run them.
QUOTED = {"examples/fastapi_app.py": "tests/test_fastapi_example.py"}
# The apps that pages tell readers to serve, and the tests that serve them.
SERVED = {
    "examples.demo.app:app": "tests/serving.py",  # served for the browser test
    "examples.fastapi_app:app": "tests/test_fastapi_example.py",
}


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(runs(b) or b.title for b in blocks(p))], ids=_name
)
def test_the_page_runs_as_shown(page: Path) -> None:
    """In a fresh interpreter and an empty directory, the page's blocks in
    order; what a block prints is what the page shows after it."""
    returncode, output = _run_page(page)
    assert returncode == 0, output


def _run_page(page: Path) -> tuple[int, str]:
    """The runner's exit code and output; on a timeout, everything it
    started is killed with it."""
    runner = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "docs_blocks.py"), str(page)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = runner.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        output, _ = runner.communicate()
        pytest.fail(f"{page} still ran after 300 s:\n{output}")
    return runner.returncode, output


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text)
    return page


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("```python\nx = 1\n", "never closed"),
        ("  ```python\nx = 1\n  ```\n", "indented"),
        ('```{.python title="a.py"}\nx = 1\n```\n', "write ```language"),
    ],
)
def test_the_runner_refuses_fences_it_could_misread(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        blocks(_page(tmp_path, text))


def test_the_runner_finds_every_kind_of_fence_and_fails_on_wrong_output(
    tmp_path: Path,
) -> None:
    page = _page(
        tmp_path,
        "~~~python\nprint('tilde')\n~~~\n\n"
        "````python\nprint('```')\n````\n\n"
        "```python\nprint('shown')\n```  \n\n```text\nnot what it prints\n```\n",
    )
    found = blocks(page)
    assert [b.code for b in found] == [
        "print('tilde')\n",
        "print('```')\n",
        "print('shown')\n",
        "not what it prints\n",
    ]
    assert found[2].output is found[3]
    returncode, output = _run_page(page)
    assert returncode != 0
    assert "printed\nshown\n\nbut the page shows\nnot what it prints" in output


def test_every_block_is_run_or_checked() -> None:
    """A block the runner does not run is a page's output, a file it
    writes, a quote of a tested file, shell commands (checked below) or
    checked by a named test."""
    unchecked = []
    for block in _all_blocks():
        if runs(block) or block.is_output or block.title or block.language == "sh":
            continue
        if block.includes:
            for include in block.includes:
                path, _, section = include.partition(":")
                assert path in QUOTED, f"{block.where}: no test runs {path}"
                assert f"# --8<-- [start:{section}]" in (ROOT / path).read_text()
                assert (ROOT / QUOTED[path]).exists()
            continue
        key = (_name(block.page), block.code.splitlines()[0])
        if key in CHECKED_ELSEWHERE:
            test_file, test = CHECKED_ELSEWHERE[key]
            assert f"def {test}(" in (ROOT / test_file).read_text(), key
            continue
        unchecked.append(f"{block.where} ({block.language})")
    assert unchecked == []


def test_every_quoted_section_of_the_example_is_on_a_page() -> None:
    """getting-started.md walks through the whole FastAPI example."""
    example = (ROOT / "examples" / "fastapi_app.py").read_text()
    sections = re.findall(r"^# --8<-- \[start:(\w+)\]$", example, re.MULTILINE)
    quoted = [include for block in _all_blocks() for include in block.includes]
    assert quoted == [f"examples/fastapi_app.py:{section}" for section in sections]


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for block in _all_blocks():
        if block.language != "sh":
            continue
        for line in block.code.splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word == "&&":
                    if command:
                        found.append((block.where, command))
                    command = []
                else:
                    command.append(word)
    return found


def _extras(target: str) -> list[str]:
    match = re.fullmatch(r"(?:\.|/path/to/asignals)\[([\w,]+)\]", target)
    assert match, f"install asignals from its source, with extras: not {target!r}"
    return match.group(1).split(",")


def _in_some_extra(package: str) -> bool:
    return any(
        re.match(r"[\w.-]+", requirement).group(0) == package  # type: ignore[union-attr]
        for requirements in EXTRAS.values()
        for requirement in requirements
    )


@pytest.mark.parametrize(("where", "command"), _commands(), ids=lambda value: str(value))
def test_each_shell_command_names_what_exists(where: str, command: list[str]) -> None:
    """Extras that pyproject.toml defines, packages that it names, scripts
    that exist, apps that a test serves. (CI runs the README's test command;
    `mkdocs build --strict` too.)"""
    program, *arguments = command
    if program == "pip":
        assert arguments[0] == "install", where
        targets = [a for a in arguments[1:] if a != "-e"]
        for target in targets:
            if "[" in target:
                assert set(_extras(target)) <= set(EXTRAS), where
            else:
                assert _in_some_extra(target), f"{where}: {target} is in no extra"
    elif program in ("python", "python3"):
        if arguments[:2] in (["-m", "venv"], ["-m", "pytest"]):
            return
        assert (ROOT / arguments[0]).is_file(), where
        assert arguments[1:] == [], where
    elif program == "uvicorn":
        assert arguments[0] in SERVED, where
        assert arguments[0] in (ROOT / SERVED[arguments[0]]).read_text(), where
    elif program == ".":
        assert arguments == [".venv/bin/activate"], where
    elif program == "mkdocs":
        assert arguments in (["serve"], ["build", "--strict"]), where
    else:
        pytest.fail(f"{where}: no check for {program}")


def test_the_error_tree_is_the_classes_tree() -> None:
    """errors.md's tree, and its table, name every error class, each under
    its base, with the builtin it also is."""
    (tree,) = [b for b in blocks(DOCS / "errors.md") if b.language == "text"]

    def lines(cls: type[BaseException], depth: int) -> list[str]:
        builtin = [
            b.__name__
            for b in cls.__bases__
            if b.__module__ == "builtins" and b is not asignals.AsignalsError
        ]
        label = cls.__name__ + (f" ({builtin[0]})" if builtin else "")
        found = [(depth, label)]
        for sub in sorted(cls.__subclasses__(), key=_order):
            found += lines(sub, depth + 1)
        return found

    shown = [
        (len(re.match(r"[│├└─ ]*", line).group(0)) // 4, line.lstrip("│├└─ "))
        for line in tree.code.splitlines()
    ]
    expected = lines(asignals.AsignalsError, 0)
    assert shown == expected
    table = (DOCS / "errors.md").read_text()
    for _, label in expected[1:]:
        assert f"| `{label.split()[0]}` |" in table


def _order(cls: type) -> int:
    import asignals._exceptions as exceptions

    return list(vars(exceptions).values()).index(cls)


def test_every_error_class_is_importable_from_asignals() -> None:
    def all_of(cls: type[BaseException]) -> list[type[BaseException]]:
        return [cls] + [s for sub in cls.__subclasses__() for s in all_of(sub)]

    for cls in all_of(asignals.AsignalsError):
        assert getattr(asignals, cls.__name__) is cls


def test_the_readme_is_at_most_8_kb() -> None:
    assert len(README.read_bytes()) <= 8 * 1024


def test_every_page_is_in_the_site_s_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES[1:]:
        if page.name != "results.md":
            assert f": {page.relative_to(DOCS)}\n" in nav, page


def test_the_version_is_the_package_s() -> None:
    from importlib.metadata import version

    assert asignals.__version__ == version("asignals")


def test_the_api_reference_lists_every_public_name() -> None:
    """docs/reference/asignals.md names its members; none is left out."""
    page = (DOCS / "reference" / "asignals.md").read_text()
    listed = re.findall(r"^        - (\w+)$", page, re.MULTILINE)
    assert sorted(listed) == sorted(asignals.__all__)
