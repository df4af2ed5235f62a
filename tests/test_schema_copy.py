"""The Result schema the tests validate against is the design handbook's, kept in step."""

import json
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_schema_copy_matches_shared_when_present():
    shared = HERE.parents[1] / "shared" / "result.schema.json"
    if not shared.exists():
        pytest.skip("no shared/ beside this checkout")
    assert json.loads(shared.read_text()) == json.loads((HERE / "data" / "result.schema.json").read_text())
