"""The results store: one SQLite database per run directory, written only by the driver process.

``results.sqlite`` holds two tables:

- ``runs``: one row per invocation of ``weightstep run`` on the directory: start and end
  time, status, the protocol's name and text, git commit, package versions, the machine,
  seeds, executor, and the keys of the jobs that invocation planned (reports show those).
- ``jobs``: one row per job, keyed by its hash: status (``done``, ``failed``, ``skipped``),
  technique label, codec, rate point, parameters, built config, seed, dataset, video, the
  Result record as JSON (the schema of ``shared/result.schema.json``), the bitstream's path
  relative to the run directory, the error text, timestamps.

WAL mode and one commit per job: a killed run loses at most the jobs in flight. Workers never
open the database; they return Result dicts to the driver.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from weightstep.errors import InputError
from weightstep.experiments.jobs import Job, canonical_json
from weightstep.experiments.specs import DONE

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL,
    protocol_name TEXT NOT NULL,
    protocol_path TEXT,
    protocol_text TEXT,
    profile TEXT,
    git_commit TEXT,
    git_dirty INTEGER,
    versions TEXT,
    device TEXT,
    seeds TEXT,
    executor TEXT,
    workers INTEGER,
    threads_per_job INTEGER,
    command TEXT,
    meta TEXT,
    keys TEXT,
    counts TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    technique TEXT NOT NULL,
    codec TEXT NOT NULL,
    rate_index INTEGER NOT NULL,
    rate_point TEXT NOT NULL,
    params TEXT NOT NULL,
    config TEXT,
    seed INTEGER,
    dataset TEXT NOT NULL,
    video TEXT NOT NULL,
    video_label TEXT NOT NULL,
    spec TEXT NOT NULL,
    options TEXT NOT NULL,
    result TEXT,
    bitstream TEXT,
    error TEXT,
    traceback TEXT,
    started REAL,
    finished REAL,
    wall_s REAL,
    run_id INTEGER,
    bpp REAL,
    psnr_rgb REAL,
    psnr_yuv REAL,
    ms_ssim REAL,
    encode_s REAL,
    decode_s REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""

_JSON_COLUMNS = {"rate_point", "params", "config", "options", "result"}
_RUN_JSON_COLUMNS = {"versions", "device", "seeds", "meta", "keys", "counts"}


class Store:
    """The run directory's database. Open with :meth:`create` (the driver) or :meth:`open` (reports)."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self.db = connection
        self.db.row_factory = sqlite3.Row

    @classmethod
    def create(cls, run_dir: str | Path) -> Store:
        """Open the run directory's database for writing, creating it (and the folder) if needed."""
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from None
        path = run_dir / DB_NAME
        try:
            db = sqlite3.connect(path, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise InputError(f"{path}: results database of schema {version}; this weightstep reads "
                                 f"{SCHEMA_VERSION} (use another --out)")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.commit()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: not a usable results database ({exc})") from None
        return cls(path, db)

    @classmethod
    def open(cls, run_dir: str | Path) -> Store:
        """Open an existing run directory's database for reading."""
        run_dir = Path(run_dir)
        path = run_dir / DB_NAME
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: no such run directory")
        if not path.is_file():
            raise InputError(f"{run_dir}: not a run directory (it has no {DB_NAME})")
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: not a usable results database ({exc})") from None
        if version != SCHEMA_VERSION:
            raise InputError(f"{path}: results database of schema {version}; this weightstep reads {SCHEMA_VERSION}")
        return cls(path, db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # runs ----------------------------------------------------------------------------------------
    def begin_run(self, record: Mapping[str, Any]) -> int:
        """Insert a run row (status 'running'); returns its id.

        Earlier rows still 'running' belong to drivers that were killed (the caller holds the
        directory's lock): they are marked 'killed'.
        """
        self.db.execute("UPDATE runs SET status = 'killed' WHERE status = 'running'")
        values = {"started": time.time(), "status": "running", **record}
        values = {k: canonical_json(v) if k in _RUN_JSON_COLUMNS else v for k, v in values.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cursor = self.db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", list(values.values()))
        self.db.commit()
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, status: str, counts: Mapping[str, int]) -> None:
        self.db.execute("UPDATE runs SET finished = ?, status = ?, counts = ? WHERE id = ?",
                        (time.time(), status, canonical_json(dict(counts)), run_id))
        self.db.commit()

    def runs(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [_decode(row, _RUN_JSON_COLUMNS) for row in rows]

    def latest_run(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return _decode(row, _RUN_JSON_COLUMNS) if row is not None else None

    # jobs ----------------------------------------------------------------------------------------
    def statuses(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        rows = self.db.execute("SELECT key, status FROM jobs").fetchall()
        wanted = None if keys is None else set(keys)
        return {r["key"]: r["status"] for r in rows if wanted is None or r["key"] in wanted}

    def measured_at(self) -> dict[str, tuple[str | None, bool | None]]:
        """Each finished job's (git commit, dirty tree) of the run that measured it."""
        rows = self.db.execute("SELECT jobs.key, runs.git_commit, runs.git_dirty FROM jobs LEFT JOIN runs "
                               "ON jobs.run_id = runs.id WHERE jobs.status = ?", (DONE,)).fetchall()
        return {r[0]: (r[1], None if r[2] is None else bool(r[2])) for r in rows}

    def record(self, job: Job, status: str, run_id: int, *, result: Mapping[str, Any] | None = None,
               bitstream: str | None = None, error: str | None = None, traceback: str | None = None,
               started: float | None = None, finished: float | None = None, wall_s: float | None = None) -> None:
        """Write (or replace) a job's row and commit. A 'done' row is never replaced by anything else."""
        if status != DONE:
            existing = self.db.execute("SELECT status FROM jobs WHERE key = ?", (job.key,)).fetchone()
            if existing is not None and existing["status"] == DONE:
                return
        r = result or {}
        values = {
            "key": job.key, "status": status, "technique": job.technique, "codec": job.codec,
            "rate_index": job.rate_index, "rate_point": canonical_json(job.rate_point),
            "params": canonical_json(job.params),
            "config": canonical_json(job.config) if job.config is not None else None, "seed": job.seed,
            "dataset": job.dataset, "video": job.video, "video_label": job.video_label, "spec": job.spec,
            "options": canonical_json(job.options),
            "result": canonical_json(result) if result is not None else None, "bitstream": bitstream,
            "error": error, "traceback": traceback, "started": started, "finished": finished or time.time(),
            "wall_s": wall_s, "run_id": run_id, "bpp": r.get("bpp"), "psnr_rgb": r.get("psnr_rgb"),
            "psnr_yuv": r.get("psnr_yuv"), "ms_ssim": r.get("ms_ssim"), "encode_s": r.get("encode_s"),
            "decode_s": r.get("decode_s"),
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.db.execute(f"INSERT OR REPLACE INTO jobs ({columns}) VALUES ({marks})", list(values.values()))
        self.db.commit()

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Job rows (JSON columns decoded), in insertion order; only ``keys`` when given."""
        rows = [_decode(r, _JSON_COLUMNS) for r in self.db.execute("SELECT * FROM jobs ORDER BY rowid")]
        if keys is None:
            return rows
        order = {key: i for i, key in enumerate(keys)}
        return sorted((r for r in rows if r["key"] in order), key=lambda r: order[r["key"]])

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _decode(row: sqlite3.Row, json_columns: set[str]) -> dict[str, Any]:
    out = dict(row)
    for key in json_columns:
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    return out


__all__ = ["DB_NAME", "SCHEMA_VERSION", "Store"]
