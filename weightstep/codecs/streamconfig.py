"""Which settings a stream carries: what its decoder reads, and of that only what differs from a
table of defaults frozen for the stream.

A weightstep file's rate is its elementary stream (:mod:`weightstep.coding.container`), so the
settings in that stream are paid for like any other bits. A decoder needs the settings that change
what it rebuilds (the network's kind and sizes, the update kind, the warp grid, the GOP, the
seed), never how the encoder searched (lambda, step counts, learning rates, time budgets): those
are the codec's ``ENCODER_ONLY`` fields, kept in the file's metadata with everything else. Fields
the config never reads for its network (``unused_fields()``, e.g. a SIREN's width in a grid
stream) are left out too.

What remains is written only where it differs from ``tables[n]``, a literal table of defaults
frozen in the codec's module under a number ``n`` that the header names (key ``defaults``): a
stream at the defaults carries ``{}``. The tables never change once files exist; when a codec's
defaults change, a new table joins them (a test compares the newest with the config's defaults
and says so). A header without ``defaults`` (container version 1) carries every field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from weightstep.errors import BitstreamError

__all__ = ["stream_config", "full_config", "plain"]

_MISSING = object()


def plain(value: Any) -> Any:
    """The JSON-normal form of ``value`` (tuples as lists): what a header gives back."""
    return json.loads(json.dumps(value))


def stream_config(config: Any, tables: Mapping[int, Mapping[str, Any]],
                  encoder_only: frozenset[str]) -> tuple[dict[str, Any], int]:
    """(the settings a stream of ``config`` carries, the number of the table they differ from)."""
    number = max(tables)
    table = tables[number]
    unused = config.unused_fields() if hasattr(config, "unused_fields") else frozenset()
    values = plain(dataclasses.asdict(config))
    carried = {name: value for name, value in values.items()
               if name not in encoder_only and name not in unused and name != "device"
               and value != table.get(name, _MISSING)}
    return carried, number


def full_config(header: Mapping[str, Any], tables: Mapping[int, Mapping[str, Any]], what: str) -> dict[str, Any]:
    """Every setting of a stream's header: its table's defaults under what it carries."""
    stored = header.get("config")
    if not isinstance(stored, dict):
        raise BitstreamError(f"{what}: header config is not an object")
    if "defaults" not in header:
        return dict(stored)  # container version 1: the whole config
    number = header["defaults"]
    if isinstance(number, bool) or not isinstance(number, int) or number not in tables:
        raise BitstreamError(f"{what}: unknown table of defaults {number!r} (this build knows {sorted(tables)})")
    return {**tables[number], **stored}
