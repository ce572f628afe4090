"""A mistyped policy tag gets the compiler's own message naming the tag, not Python's."""

from __future__ import annotations

import json

from compiler.compile.api import compile_notebook_json
from tests.nbutil import make_notebook


def test_bad_numbers_in_tags_read_as_user_messages(tmp_path):
    path = make_notebook(
        tmp_path / "tags.ipynb",
        [("x = 1", ["task:load", "retries:three", "resources:cpu=lots;gpu=one"])],
    )
    result = compile_notebook_json(json.loads(path.read_text()), path.name, str(path))
    messages = [d.message for d in result.diagnostics if d.severity == "error"]
    assert "bad tag 'retries:three': retries must be a number (e.g. retries:2), not 'three'" in (
        messages
    )
    assert any("cpu must be a number (e.g. 2, 0.5 or 500m), not 'lots'" in m for m in messages)
    assert not any("invalid literal" in m or "could not convert" in m for m in messages)
    assert all(d.cell_index == 0 for d in result.diagnostics if d.severity == "error")
