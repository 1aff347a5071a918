"""Run published blinker users' own test suites twice, on blinker and on
asignals installed under blinker's name, and compare every test's outcome.

Run: python tests/blinker_users.py [--work DIR] [--only NAME]

For each project below, the script makes a virtual environment in DIR (a
temporary folder by default), installs the project, its test tools, blinker
1.9 and asignals from this checkout, downloads the project's source
distribution (which holds its tests) from the package index, and runs the
chosen test files with pytest: first as they are, then with a ``blinker``
package that re-exports asignals first on the path. It prints one line per
project and exits non-zero if any test's outcome differs. It needs the
package index; CI runs it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHIM = '''"""asignals, under blinker's name."""

from asignals import ANY, NamedSignal, Namespace, Signal, default_namespace, signal

__all__ = ["ANY", "NamedSignal", "Namespace", "Signal", "default_namespace", "signal"]
'''


@dataclass
class Project:
    name: str
    requirement: str
    tests: list[str]
    tools: list[str] = field(default_factory=list)
    pytest_args: list[str] = field(default_factory=list)


PROJECTS = [
    # Passes its own "_request_id" and "_emit_payload" keywords through send().
    Project(
        "signalkit",
        "signalkit==2.5.0",
        ["tests"],
        tools=["pytest-asyncio"],
        pytest_args=["-o", "asyncio_mode=auto"],
    ),
    # Flask's signals, and the app and request contexts and templates that send them.
    Project(
        "flask",
        "flask==3.1.3",
        [
            "tests/test_signals.py",
            "tests/test_templating.py",
            "tests/test_appctx.py",
            "tests/test_reqctx.py",
            "tests/test_basic.py",
        ],
        # Its conftest uses monkeypatch.notset, which pytest 8.4 removed.
        tools=["pytest<8.4", "asgiref"],
    ),
]


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, env=env, check=True, timeout=900)


def outcomes(report: Path) -> dict[str, str]:
    """Each test's outcome in a JUnit XML report."""
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        found[test] = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
    return found


def check(project: Project, work: Path) -> bool:
    home = work / project.name
    venv = home / "venv"
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "venv", venv)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, "pytest", "blinker==1.9.*", project.requirement, *project.tools, ROOT)
    source = home / "source"
    run(
        *pip[:3],
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        home,
        project.requirement,
    )
    (archive,) = home.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(source, filter="data")
    (tree,) = source.iterdir()
    shim = home / "shim"
    (shim / "blinker").mkdir(parents=True)
    (shim / "blinker" / "__init__.py").write_text(SHIM)
    results = {}
    for label, path in (("blinker", ""), ("asignals", str(shim))):
        report = home / f"{label}.xml"
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": str(home)}
        subprocess.run(
            [
                str(python),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                *project.pytest_args,
                *project.tests,
            ],
            cwd=tree,
            env=env,
            timeout=900,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        results[label] = outcomes(report)
    # Which blinker each run imported, to be sure the second was asignals.
    probe = "import blinker; print(blinker.Signal.__module__)"
    shimmed = subprocess.run(
        [str(python), "-c", probe],
        env={"PYTHONPATH": str(shim)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    on_blinker, on_asignals = results["blinker"], results["asignals"]
    differ = sorted(
        test
        for test in on_blinker.keys() | on_asignals.keys()
        if on_blinker.get(test) != on_asignals.get(test)
    )
    passed = [sum(o == "passed" for o in r.values()) for r in (on_blinker, on_asignals)]
    print(
        f"{project.requirement}: {len(on_blinker)} tests; passed on blinker {passed[0]}, "
        f"on asignals {passed[1]} (imported as blinker: {shimmed}); "
        f"{len(differ)} outcome(s) differ"
    )
    for test in differ:
        print(f"  {test}: blinker {on_blinker.get(test)}, asignals {on_asignals.get(test)}")
    # A suite that cannot run at all (on either) proves nothing.
    return not differ and shimmed.startswith("asignals") and passed[0] > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="where to build (default: a temporary folder)")
    parser.add_argument("--only", help="run one project, by name")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="blinker-users-"))
    try:
        chosen = [p for p in PROJECTS if args.only in (None, p.name)]
        ok = all([check(project, work) for project in chosen])
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
