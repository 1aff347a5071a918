"""The README's examples run as they stand."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

README = Path(__file__).parent.parent / "README.md"


def _blocks(heading: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section under ``heading``."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end] if end != -1 else text[start:]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_templates_and_flash_example_flashes_redirects_and_renders(
    anyio_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (code,) = _blocks("## Templates and flash messages", "python")
    (template,) = _blocks("## Templates and flash messages", "jinja")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "home.html").write_text(template)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)

    with TestClient(namespace["app"], backend=anyio_backend) as client:
        response = client.post("/save")
        again = client.get("/")

    assert response.status_code == 200
    assert [r.url.path for r in response.history] == ["/save"]
    assert '<p class="info">Saved.</p>' in response.text
    assert "Saved." not in again.text
    assert capsys.readouterr().out.splitlines() == [
        "flashed info Saved.",
        "rendered home.html",
        "rendered home.html",
    ]


def test_the_background_example_answers_then_mails_and_reports(
    anyio_backend: str, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    (code,) = _blocks("## Background sends", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)

    with TestClient(namespace["app"], backend=anyio_backend) as client:
        response = client.post("/checkout")
        assert response.text == "thanks"
    # The lifespan's shutdown waited for the background send.

    assert capsys.readouterr().out.splitlines() == [
        "receipt for order 42 mailed to ada",
        "background receiver failed: LookupError('no stock for order 42')",
    ]
    (record,) = caplog.records
    assert record.name == "asignals"
    assert "update_stock" in record.getMessage()


def test_the_observers_example_runs_and_stops_observing(capsys: Any) -> None:
    (code,) = _blocks("## Observers", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)

    assert capsys.readouterr().out == ""  # nothing slow, nothing failed
    saved = namespace["saved"]
    assert saved._observers is None

    def broken(sender: Any, **kwargs: Any) -> None:
        raise LookupError(sender)

    saved.connect(broken)
    with namespace["observe"](namespace["SlowReceivers"](), saved), pytest.raises(LookupError):
        saved.send("doc-2")
    assert "sync send of" in capsys.readouterr().out
