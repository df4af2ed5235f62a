"""Reports built from a small hand-made results database: every file, every section, honest n/a cells."""

import base64
import csv
import math
import re

import pytest
from typer.testing import CliRunner

from weightstep.cli import app
from weightstep.experiments import build_report
from weightstep.experiments.jobs import Job, job_key
from weightstep.experiments.report import FILES, load_run, rd_points, stage_pairs
from weightstep.experiments.store import Store

CLIPS = [("uvg", "Beauty@4f", 4), ("uvg", "Beauty@8f", 8), ("uvg", "Jockey@4f", 4), ("uvg", "Jockey@8f", 8)]
TECHNIQUES = [  # label, codec, params, rate points, how good (dB over the anchor at equal rate)
    ("H.264", "x264", {}, [{"crf": c} for c in (22, 27, 32, 37)], 0.0),
    ("H.265", "x265", {}, [{"crf": c} for c in (22, 27, 32, 37)], 1.0),
    ("MLP two-stage", "weightstep", {"inr": "siren", "schedule": "two-stage"}, [{"lambda": v} for v in (1, 2, 3, 4)], -2.0),
    ("MLP single-stage", "weightstep", {"inr": "siren", "schedule": "single-stage"},
     [{"lambda": v} for v in (1, 2, 3, 4)], -1.5),
    ("NeRV", "nerv", {}, [{"channels": 16}, {"channels": 32}], -1.0),  # 2 points: no BD-rate possible
    ("Broken", "full-mlp", {}, [{"width": 8}], 0.0),
    ("DVC", "dvc", {}, [{"lmbda": 256}], 0.0),
]


def fake_result(codec, config, clip, frames, index, offset):
    bpp = 0.05 * 2 ** index
    psnr = 30.0 + 4.0 * math.log2(bpp / 0.05) + offset
    bits = [2000 * (index + 1)] + [100 * (index + 1) + 7 * t for t in range(1, frames)]
    return {"codec": codec, "config": config, "video": f"data:{clip}", "frames": frames, "width": 64, "height": 48,
            "fps": 30.0, "bytes": int(bpp * frames * 64 * 48 / 8), "file_bytes": 999, "bpp": bpp, "psnr_rgb": psnr,
            "psnr_yuv": psnr + 2, "ms_ssim": 1 - 0.5 * 10 ** (-psnr / 20), "encode_s": 0.5 * frames * (1 + index),
            "decode_s": 0.01 * frames, "per_frame": [{"bits": b, "psnr_rgb": psnr} for b in bits], "device": "cpu",
            "versions": {}, "seed": 0, "estimated_bits": None, "extra": {}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    jobs = []
    for dataset, clip, frames in CLIPS:
        for label, codec, params, points, offset in TECHNIQUES:
            for index, point in enumerate(points):
                config = {**params, **point}
                seed = 0 if codec in ("weightstep", "nerv", "full-mlp") else None
                key = job_key(codec, config, None, f"data:{clip}", seed)
                jobs.append((Job(key=key, technique=label, codec=codec, rate_index=index, rate_point=point,
                                 params=config, config=config, seed=seed, dataset=dataset, video=f"data:{clip}",
                                 video_label=clip, spec="/nowhere", options={"frames": frames}, suffix=".bin"),
                             frames, offset))
    meta = {"name": "fake", "description": "a fake run", "anchor": "H.264", "also_against": ["H.265"],
            "metrics": ["psnr_rgb", "psnr_yuv", "ms_ssim"], "bd_interpolation": "pchip", "seeds": [0],
            "techniques": [{"label": t[0], "codec": t[1], "params": t[2], "rate_points": t[3], "description": ""}
                           for t in TECHNIQUES],
            "datasets": ["uvg"],
            "videos": [{"dataset": d, "label": c, "identity": f"data:{c}", "width": 64, "height": 48, "frames": f,
                        "status": "todo", "reason": None} for d, c, f in CLIPS],
            "notes": ["dataset mcl: no file matches '*.yuv' in /data/MCL"]}
    with Store.create(run) as store:
        run_id = store.begin_run({"protocol_name": "fake", "protocol_path": "fake.toml", "protocol_text": "",
                                  "git_commit": "abc123", "git_dirty": 0, "versions": {"torch": "2.13"},
                                  "device": {"cpu": "test cpu", "cpu_count": 2}, "seeds": [0], "executor": "local",
                                  "workers": 1, "meta": meta, "keys": [j.key for j, _, _ in jobs]})
        for job, frames, offset in jobs:
            if job.technique == "Broken":
                store.record(job, "failed", run_id, error="RuntimeError: out of memory\nmore lines")
            elif job.technique == "DVC":
                store.record(job, "skipped", run_id, error="codec 'dvc' is not registered here")
            else:
                result = fake_result(job.codec, job.config, job.video_label, frames, job.rate_index, offset)
                store.record(job, "done", run_id, result=result, bitstream=f"bitstreams/{job.key[:8]}.bin")
        store.finish_run(run_id, "finished", {"done": 1})
    return run


@pytest.fixture(scope="module")
def report_dir(run_dir):
    """The report, built once (figures take a while on a busy 2-core machine) over a stale figure."""
    out = run_dir / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "rd-old.png").write_bytes(b"x")
    files = build_report(run_dir)
    assert files.out_dir == out
    return out


def test_report_has_every_file_and_section(report_dir):
    out = report_dir
    assert not (out / "figures" / "rd-old.png").exists()  # figures no longer produced are removed
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "rd-uvg-mean.png" in figures and "timing-uvg.png" in figures and "stages-uvg.png" in figures
    assert {"rd-uvg-clips-psnr_rgb.png", "rd-uvg-clips-psnr_yuv.png", "rd-uvg-clips-ms_ssim.png"} <= set(figures)
    assert "bits-MLP-two-stage.png" in figures and "bits-MLP-single-stage.png" in figures
    for name in figures:
        assert (out / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = (out / "summary.md").read_text()
    for heading in ("# fake: results", "## How this was measured", "## BD-rate against H.264",
                    "## Rate-distortion curves", "## Encode and decode time against clip length",
                    "## Single-stage against two-stage", "## Per-frame bits of weight-step runs", "## All RD points",
                    "## Jobs that did not run"):
        assert heading in summary, heading
    assert "git commit: abc123" in summary and "dataset mcl: no file matches" in summary
    # H.265 is 1 dB better everywhere: a clearly negative BD-rate over all 4 clips
    row = next(line for line in summary.splitlines() if line.startswith("| H.265 |"))
    value = float(re.search(r"\| ([+-][0-9.]+) % \(4/4 clips\)", row).group(1))
    assert value < -5
    # also_against: a second table against H.265, where H.264 (1 dB worse everywhere) needs more bits
    against_265 = summary[summary.index("## BD-rate against H.265"):summary.index("## Rate-distortion curves")]
    row = next(line for line in against_265.splitlines() if line.startswith("| H.264 |"))
    assert float(re.search(r"\| ([+-][0-9.]+) % \(4/4 clips\)", row).group(1)) > 5
    assert "and against 'H.265'" in summary
    nerv = next(line for line in summary.splitlines() if line.startswith("| NeRV |"))
    assert "n/a: BD: test curve has 2 points; at least 4 are needed" in nerv
    broken = next(line for line in summary.splitlines() if line.startswith("| Broken |"))
    assert "n/a: failed" in broken
    assert "| failed | Broken | 4 |" in summary and "RuntimeError: out of memory" in summary
    assert "| skipped | DVC | 4 |" in summary and "not registered" in summary
    assert "![uvg: RD curves averaged" in summary and "(figures/rd-uvg-mean.png)" in summary
    # single- against two-stage: single-stage is 0.5 dB better, so it needs fewer bits
    stage = next(line for line in summary.splitlines() if line.startswith("| uvg | MLP single-stage | MLP two-stage"))
    assert float(re.search(r"\| ([+-][0-9.]+) %", stage).group(1)) < 0
    # timing against clip length: one row per technique and length
    assert re.search(r"\| H.264 \| 4 \| 8 \|", summary) and re.search(r"\| H.264 \| 8 \| 8 \|", summary)

    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(figures)
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "figures/" not in page.replace("figures/rd", "")  # nothing refers to files beside it
    assert "<table>" in page and "fake: results" in page

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * sum(len(t[3]) for t in TECHNIQUES)
    assert {r["status"] for r in rows} == {"done", "failed", "skipped"}
    done = next(r for r in rows if r["technique"] == "H.264" and r["rate_index"] == "0")
    assert float(done["bpp"]) == pytest.approx(0.05) and done["bitstream"].startswith("bitstreams/")
    assert next(r for r in rows if r["technique"] == "Broken")["error"] == "RuntimeError: out of memory"


def test_aggregation_rules(run_dir):
    data = load_run(run_dir)
    assert data.techniques[:2] == ["H.264", "H.265"] and data.clips["uvg"] == [c for _, c, _ in CLIPS]
    points = rd_points(data)
    assert [p.rate_index for p in points[("uvg", "Beauty@4f")]["H.264"]] == [0, 1, 2, 3]
    assert "Broken" not in points[("uvg", "Beauty@4f")]
    assert stage_pairs(data) == [("MLP single-stage", "MLP two-stage")]


def test_report_cli_refuses_non_runs(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no such run directory" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "empty").mkdir()
    bad = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert bad.exit_code == 2 and "not a run directory" in bad.stderr


def test_partial_run_says_so(tmp_path, report_dir):
    assert "Partial run" not in (report_dir / "summary.md").read_text()  # every planned job has a row there
    run = tmp_path / "partial"
    label, codec, params, points, offset = TECHNIQUES[0]
    jobs = [Job(key=job_key(codec, {**params, **p}, None, "data:Beauty@4f", None), technique=label, codec=codec,
                rate_index=i, rate_point=p, params={**params, **p}, config={**params, **p}, seed=None, dataset="uvg",
                video="data:Beauty@4f", video_label="Beauty@4f", spec="/nowhere", options={"frames": 4},
                suffix=".bin") for i, p in enumerate(points)]
    meta = {"name": "part", "anchor": label, "metrics": ["psnr_rgb"], "seeds": [0], "datasets": ["uvg"],
            "techniques": [{"label": label, "codec": codec, "params": params, "rate_points": points}],
            "videos": [{"dataset": "uvg", "label": clip, "identity": f"data:{clip}", "width": 64,
                        "height": 48, "frames": 4, "status": "todo", "reason": None}
                       for clip in ("Beauty@4f", "Bosphorus@4f")]}
    with Store.create(run) as store:
        run_id = store.begin_run({"protocol_name": "part", "protocol_path": "part.toml", "protocol_text": "",
                                  "seeds": [0], "executor": "local", "meta": meta, "keys": [j.key for j in jobs]})
        store.record(jobs[0], "done", run_id, result=fake_result(codec, jobs[0].config, "Beauty@4f", 4, 0, offset))
    out = build_report(run).out_dir
    summary = (out / "summary.md").read_text()
    assert "Partial run: 1 of the 4 planned jobs have a result and 3 have not run yet" in summary
    # a mean over the one clip it has would not compare with a mean over both: said, not drawn
    assert f"Left out of the mean curves, for want of results on every clip (clips with results): {label} (1 of 2)" \
        in summary
    assert not (out / "figures" / "rd-uvg-mean.png").exists()


def test_where_the_bits_go(report_dir):
    summary = (report_dir / "summary.md").read_text()
    section = summary[summary.index("## Where the bits go"):summary.index("## All RD points")]
    # MLP two-stage at lambda=2 on an 8-frame clip: 32 dB, halfway (in PSNR) between H.264's crf 22 and
    # crf 27 points, whose frame 0 cost 250 and 500 bytes and whose later frames 16 and 28.5 bytes on
    # average: 353.6 and 21.35 at 32 dB (log-linear); the step result's anchor is 500 B, its steps 28.5 B
    row = next(line for line in section.splitlines()
               if line.startswith("| MLP two-stage | uvg/Beauty@8f | lambda=2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:5] == ["32.00", "500"] and cells[7] == "28"
    assert cells[9:] == ["354", "21", "1.4", "1.3"]
    # below H.264's lowest PSNR there is nothing to compare with
    low = next(line for line in section.splitlines() if line.startswith("| MLP two-stage | uvg/Beauty@8f | lambda=1 |"))
    assert low.rstrip().endswith("| - | - | - | - |")
    assert "Beauty@4f" not in section  # only each dataset's longest clips


def test_bits_split_counts_refreshes_as_anchors():
    from weightstep.experiments.report_bits import reference_bytes, split_row

    result = {"per_frame": [{"bits": b} for b in (8000, 800, 1600, 4000, 800)],
              "extra": {"changed_weights": [None, 5, 7, None, 3],
                        "anchors": [{"latent_bytes": 700, "weight_bytes": 200}, {"latent_bytes": 300, "weight_bytes": 200}],
                        "steps": [{"warp_bytes": 10}, {"warp_bytes": 30}, {"warp_bytes": 20}]}}
    parts = split_row(result)
    assert parts["anchors"] == 2.0 and parts["weight_bytes"] == 200.0
    assert parts["anchor"] == 750.0 and parts["step"] == pytest.approx(3200 / 3 / 8)
    assert parts["latent_bytes"] == 500.0 and parts["warp_bytes"] == 20.0
    assert split_row({"per_frame": [{"bits": 80}]}) is None  # one frame: no step to speak of
    curve = [(30.0, 100.0, 10.0), (34.0, 400.0, 40.0)]
    assert reference_bytes(curve, 32.0) == pytest.approx((200.0, 20.0))
    assert reference_bytes(curve, 29.9) is None and reference_bytes(curve[:1], 30.0) is None
