"""The project ships no jupyter-server handler: the graph view is an anywidget talking over the kernel's
comm. If a handler is added, this fails, and the handler needs its own tests."""

from __future__ import annotations

import os
import tomllib

from tests.support.paths import REPO


def test_no_jupyter_server_handler_is_shipped():
    """RELIABILITY.md's handler row is vacuous while the project adds no server handler (the graph view is an
    anywidget, talking over the kernel's comm). If one is added, this fails: write the row's tests then."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert "jupyter_server" not in str(project.get("project", {}).get("entry-points", {}))
    shared = project.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {}).get("wheel", {})
    assert "jupyter-config" not in str(shared.get("shared-data", {}))
    hits = []
    for root, dirs, files in os.walk(os.path.join(REPO, "workbench")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    src = f.read()
                if any(w in src for w in ("_jupyter_server_extension", "tornado", "jupyter_server", "APIHandler")):
                    hits.append(name)
    assert hits == []
    assert not os.path.exists(os.path.join(REPO, "jupyter-config"))
