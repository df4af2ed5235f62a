"""The Result schema the tests validate against: a committed copy of the design handbook's, kept in step.

The source is ``shared/result.schema.json`` beside the checkout (CI: ``../shared``); in a
worktree laid out as ``<root>/wt/<name>`` it is ``<root>/shared``. ``WEIGHTSTEP_SHARED`` names
the folder explicitly. Where no source is found only the comparison is skipped; the copy is
always checked against the Result record the harness writes.
"""

import dataclasses
import json
import os
from pathlib import Path

import jsonschema
import pytest

from weightstep.codecs.base import Result

HERE = Path(__file__).parent
COPY = HERE / "data" / "result.schema.json"


def shared_schema() -> Path | None:
    """The handbook's schema: $WEIGHTSTEP_SHARED, else a shared/ folder beside the checkout or above it."""
    if os.environ.get("WEIGHTSTEP_SHARED"):
        return Path(os.environ["WEIGHTSTEP_SHARED"]) / "result.schema.json"
    for folder in HERE.parent.parents[:3]:  # ../shared (CI), then ../../shared (worktrees), ...
        candidate = folder / "shared" / "result.schema.json"
        if candidate.exists():
            return candidate
    return None


def test_committed_copy_is_a_schema_of_the_result_record():
    schema = json.loads(COPY.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    fields = {f.name: f for f in dataclasses.fields(Result)}
    without_default = {name for name, f in fields.items()
                       if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert set(schema["required"]) <= set(fields), set(schema["required"]) - set(fields)
    assert without_default <= set(schema["required"]), without_default - set(schema["required"])
    assert set(schema["properties"]) <= set(fields)


def test_schema_copy_matches_shared_when_present():
    source = shared_schema()
    if source is None:
        pytest.skip("no shared/result.schema.json beside this checkout (set WEIGHTSTEP_SHARED)")
    assert source.exists(), f"WEIGHTSTEP_SHARED names {source.parent}, which holds no result.schema.json"
    assert json.loads(source.read_text()) == json.loads(COPY.read_text()), (
        f"tests/data/result.schema.json differs from {source}: copy the handbook's schema again")
