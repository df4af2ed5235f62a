"""The command line: thin over plain functions. Parses, calls, prints; trains nothing itself.

Every WeightstepError becomes one line on stderr and exit code 2; ``--json`` prints exactly
one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from weightstep.errors import WeightstepError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="weightstep: neural weight-step video compression and its baselines, measured on real bitstreams.")
out = Console()
err = Console(stderr=True)

# shared options --------------------------------------------------------------------------------
Frames = Annotated[int | None, typer.Option("--frames", "-n", help="number of frames to read")]
Start = Annotated[int, typer.Option("--start", help="first frame to read")]
Crop = Annotated[str | None, typer.Option("--crop", help="crop WxH+X+Y (even values) before downscaling")]
Downscale = Annotated[int, typer.Option("--downscale", help="integer area downscale factor")]
Width = Annotated[int | None, typer.Option("--width", help="width of a raw .yuv (else from its name)")]
Height = Annotated[int | None, typer.Option("--height", help="height of a raw .yuv (else from its name)")]
Fps = Annotated[float | None, typer.Option("--fps", help="frame rate (raw .yuv, or an override)")]
BitDepth = Annotated[int | None, typer.Option("--bit-depth", help="8 or 10 for a raw .yuv")]
Matrix = Annotated[str, typer.Option("--matrix", help="colour matrix for RGB: bt709 or bt601")]
Json = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout and nothing else there")]
Device = Annotated[str, typer.Option("--device", help="where to decode our own (INR) files: auto (CUDA when "
                                     "present), cpu, cuda or cuda:N; exact reproduction of the encoder's frames "
                                     "needs the kind of device the file was encoded on (its header's encoded_on)")]


def handled(func):
    """Turn library errors into one line on stderr and exit code 2 (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except WeightstepError as exc:
            err.print(f"weightstep: error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("weightstep: interrupted", markup=False)
            raise typer.Exit(130) from None

    return wrapper


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the main thread while the block runs (then the old handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_options(start: int, frames: int | None, crop: str | None, downscale: int, width: int | None,
                  height: int | None, fps: float | None, bit_depth: int | None, matrix: str):
    from weightstep.video.options import ReadOptions, parse_crop

    crop_box = parse_crop(crop) if crop else None
    return ReadOptions(start=start, frames=frames, crop=crop_box, downscale=downscale, width=width,
                       height=height, fps=fps, bit_depth=bit_depth, matrix=matrix)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=float) + "\n")


def _result_table(result: dict) -> Table:
    table = Table(show_header=False, title=f"{result['codec']} on {result['video']}")
    table.add_column(style="bold")
    table.add_column()
    rows = [("frames", f"{result['frames']} x {result['width']}x{result['height']} @ {result['fps']:.3f} fps"),
            ("bytes", f"{result['bytes']} (file {result['file_bytes']})"), ("bpp", f"{result['bpp']:.4f}"),
            ("PSNR RGB", f"{result['psnr_rgb']:.2f} dB"), ("PSNR YUV", f"{result['psnr_yuv']:.2f} dB"),
            ("MS-SSIM", f"{result['ms_ssim']:.4f}"), ("encode", f"{result['encode_s']:.2f} s"),
            ("decode", f"{result['decode_s']:.2f} s"), ("device", result["device"]),
            ("config", json.dumps(result["config"]))]
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command()
@handled
def info(video: Annotated[str, typer.Argument(help="path, sample:NAME or synthetic:NAME")],
         frames: Frames = None, start: Start = 0, crop: Crop = None, downscale: Downscale = 1,
         width: Width = None, height: Height = None, fps: Fps = None, bit_depth: BitDepth = None,
         matrix: Matrix = "bt709", as_json: Json = False) -> None:
    """Describe a video: geometry, frame rate, frame count, bit depth."""
    from weightstep.video.readers import probe

    facts = probe(video, _read_options(start, frames, crop, downscale, width, height, fps, bit_depth, matrix))
    if as_json:
        _emit_json(facts)
        return
    table = Table(show_header=False, title=video)
    for key, value in facts.items():
        table.add_row(str(key), str(value))
    out.print(table)


@app.command()
@handled
def codecs(as_json: Json = False) -> None:
    """List the registered codecs with their parameters, defaults and what each is for."""
    from weightstep import registry
    from weightstep.config import describe_fields

    listing = []
    for name in registry.names():
        cls = registry.codec_class(name)
        listing.append({"name": name, "summary": cls.summary, "parameters": describe_fields(cls.Config)})
    if as_json:
        _emit_json(listing)
        return
    for entry in listing:
        table = Table(title=f"{entry['name']}: {entry['summary']}", title_justify="left")
        for column in ("parameter", "type", "default", "range", "why"):
            table.add_column(column)
        for row in entry["parameters"]:
            table.add_row(row["name"], row["type"], str(row["default"]), row["bounds"], row["why"])
        out.print(table)


@app.command()
@handled
def encode(video: Annotated[str, typer.Argument(help="path, sample:NAME or synthetic:NAME")],
           codec: Annotated[str, typer.Option("--codec", "-c", help="codec name (see `weightstep codecs`)")],
           output: Annotated[Path, typer.Option("--output", "-o", help="bitstream file to write")],
           param: Annotated[list[str] | None, typer.Option("--param", "-p", help="codec parameter key=value")] = None,
           frames: Frames = None, start: Start = 0, crop: Crop = None, downscale: Downscale = 1,
           width: Width = None, height: Height = None, fps: Fps = None, bit_depth: BitDepth = None,
           matrix: Matrix = "bt709", as_json: Json = False) -> None:
    """Encode VIDEO, write the bitstream, decode it back and measure rate and quality."""
    from weightstep import registry
    from weightstep.codecs import harness
    from weightstep.config import parse_assignments
    from weightstep.fileio import check_output_path
    from weightstep.video.readers import open_video

    check_output_path(output)  # before hours of fitting
    instance = registry.create(codec, parse_assignments(param))
    reason = instance.availability()
    if reason:
        from weightstep.errors import UnavailableError

        raise UnavailableError(f"{codec} cannot run here: {reason}")
    source = open_video(video, _read_options(start, frames, crop, downscale, width, height, fps, bit_depth, matrix))
    result = harness.run(instance, source, output).to_dict()
    if as_json:
        _emit_json(result)
    else:
        out.print(_result_table(result))
        out.print(f"wrote {output}")


@app.command()
@handled
def decode(bitstream: Annotated[Path, typer.Argument(help="a file written by `weightstep encode`")],
           output: Annotated[Path, typer.Option("--output", "-o", help=".y4m, .yuv, .mkv (lossless) or a folder for PNGs")],
           device: Device = "auto") -> None:
    """Decode a bitstream and write the video."""
    from weightstep.codecs import harness
    from weightstep.fileio import read_bytes
    from weightstep.video.writers import check_writable, write_video

    check_writable(output)  # before decoding
    codec, decoded = harness.decode_bytes(read_bytes(bitstream), device)
    write_video(decoded, output)
    err.print(f"{codec.name}: {decoded.frames} frames {decoded.width}x{decoded.height} -> {output}")


@app.command("eval")
@handled
def evaluate(bitstream: Annotated[Path, typer.Argument(help="a file written by `weightstep encode`")],
             video: Annotated[str, typer.Argument(help="the source it was made from")],
             frames: Frames = None, start: Start = 0, crop: Crop = None, downscale: Downscale = 1,
             width: Width = None, height: Height = None, fps: Fps = None, bit_depth: BitDepth = None,
             matrix: Matrix = "bt709", device: Device = "auto", as_json: Json = False) -> None:
    """Decode BITSTREAM and measure it against VIDEO (read with the same options as at encode)."""
    from weightstep.codecs import harness
    from weightstep.fileio import read_bytes
    from weightstep.video.readers import open_video

    data = read_bytes(bitstream)
    source = open_video(video, _read_options(start, frames, crop, downscale, width, height, fps, bit_depth, matrix))
    result = harness.evaluate(data, source, device).to_dict()
    if as_json:
        _emit_json(result)
    else:
        out.print(_result_table(result))


@app.command("run")
@handled
def run_protocol_command(
        protocol: Annotated[Path, typer.Argument(help="protocol file (TOML; schema in protocols/README.md)")],
        out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<protocol name>)")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="continue a run in --out: skip its finished jobs")] = False,
        jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="jobs at a time (local default 1; ray default: the cluster's CPUs)")] = None,
        executor: Annotated[str, typer.Option("--executor", help="local or ray")] = "local",
        address: Annotated[str | None, typer.Option("--address", help="Ray cluster address (e.g. HOST:6379 or ray://HOST:10001; default RAY_ADDRESS, else a local Ray on 127.0.0.1)")] = None,
        data_root: Annotated[Path | None, typer.Option("--data-root", help="folder holding the datasets' roots (UVG, MCL-JCV, VTL)")] = None,
        profile: Annotated[str | None, typer.Option("--profile", help="apply the protocol's profiles.NAME read options, e.g. cpu")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit; run nothing")] = False,
        no_report: Annotated[bool, typer.Option("--no-report", help="do not write the report at the end")] = False,
        timings: Annotated[list[Path] | None, typer.Option("--timings", help="with --dry-run: earlier run directories whose measured job times calibrate the estimate (repeatable)")] = None,
        redo: Annotated[list[str] | None, typer.Option("--redo", help="with --resume: run this technique's finished jobs again, e.g. after a code change that keeps its settings (a job's key covers settings and stream format, not code); jobs measured at the current commit from a clean tree are kept, so an interrupted redo continues with the same command; repeatable")] = None) -> None:
    """Run every job of PROTOCOL (resumable), record results in OUT/results.sqlite, write OUT/report/."""
    from weightstep.experiments import load_protocol, run_protocol
    from weightstep.experiments.runner import dry_run_lines

    spec = load_protocol(protocol, profile=profile, data_root=data_root)
    if dry_run:
        lines = dry_run_lines(spec, out_dir or Path("runs") / spec.name, jobs=jobs, timings=tuple(timings or ()),
                              redo=tuple(redo or ()))
        for line in lines:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    def echo(text: str) -> None:
        err.print(text, markup=False, highlight=False, soft_wrap=True)

    run_dir = out_dir or Path("runs") / spec.name
    try:
        with _sigterm_as_interrupt():  # a batch scheduler's stop (or `kill PID`) ends the run as Ctrl-C does
            summary = run_protocol(spec, run_dir, resume=resume, jobs=jobs, executor=executor, echo=echo,
                                   report=not no_report, address=address,
                                   redo=tuple(redo or ()))
    except KeyboardInterrupt:
        again = [f"weightstep run {protocol} --out {run_dir} --resume"]
        again += [f"--{name} {value}" for name, value in (("profile", profile), ("data-root", data_root),
                                                          ("executor", executor if executor != "local" else None),
                                                          ("address", address)) if value]
        again += [f"--redo {shlex.quote(name)}" for name in redo or ()]
        err.print(f"weightstep: interrupted; every finished job is saved in {run_dir / 'results.sqlite'}. "
                  f"Continue with: {' '.join(again)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    out.print(summary.line(), markup=False, highlight=False, soft_wrap=True)


@app.command("report")
@handled
def report_command(
        run_dir: Annotated[Path, typer.Argument(help="a directory written by `weightstep run`")],
        out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="where to write (default RUN_DIR/report)")] = None,
        compare: Annotated[Path | None, typer.Option("--compare", help="another run directory (before a change): both side by side in one table, plus comparison.csv")] = None) -> None:
    """Write summary.md, report.html, results.csv and figures/ from RUN_DIR's results database."""
    from weightstep.experiments import build_report

    files = build_report(run_dir, out_dir, compare=compare)
    extra = ", comparison.csv" if compare is not None else ""
    out.print(f"wrote {files.out_dir / 'summary.md'}, report.html, results.csv{extra} and "
              f"{sum(1 for f in files.files if f.suffix == '.png')} figures", markup=False, highlight=False,
              soft_wrap=True)


# neural baselines: training and converting checkpoints (DVC, VCII) ---------------------------------
@app.command("train")
@handled
def train_command(
        kind: Annotated[str, typer.Argument(help="dvc or vcii")],
        data: Annotated[list[str], typer.Argument(help="videos (as encode takes them), folders of videos or PNG frames, Vimeo-90k roots")],
        output: Annotated[Path, typer.Option("--output", "-o", help="checkpoint file to write")],
        steps: Annotated[int, typer.Option("--steps", help="total optimiser steps")] = 2000,
        lam: Annotated[float, typer.Option("--lambda", help="DVC: rate-distortion weight (loss = lambda * MSE + bpp; 256..2048); VCII sets its rate by passes instead")] = 256.0,
        resume: Annotated[bool, typer.Option("--resume", help="continue the checkpoint at --output")] = False,
        size: Annotated[str, typer.Option("--size", help="network size preset: paper, small or tiny")] = "small",
        batch: Annotated[int, typer.Option("--batch", help="samples per step")] = 4,
        crop: Annotated[int, typer.Option("--crop", help="square crop side (a multiple of the network's stride)")] = 128,
        lr: Annotated[float, typer.Option("--lr", help="Adam learning rate")] = 1e-4,
        checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="steps between checkpoints")] = 200,
        minutes: Annotated[float | None, typer.Option("--minutes", help="stop (and save) after this wall time")] = None,
        max_frames: Annotated[int, typer.Option("--max-frames", help="frames read per clip at most")] = 100,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")] = "auto") -> None:
    """Train a DVC or VCII checkpoint on DATA (random crops, RD loss with lambda, resumable)."""
    from baselines.neuralvc.training import train_kind

    summary = train_kind(kind, data, output, steps=steps, lam=lam, resume=resume, preset=size, batch=batch, crop=crop,
                         lr=lr, checkpoint_every=checkpoint_every, minutes=minutes, max_frames=max_frames, seed=seed,
                         device=device, echo=lambda text: err.print(text, markup=False, highlight=False))
    out.print(summary.line(), markup=False, highlight=False, soft_wrap=True)


@app.command("convert")
@handled
def convert_command(
        kind: Annotated[str, typer.Argument(help="dvc or vcii")],
        sources: Annotated[list[Path], typer.Argument(help="dvc: the public iterN.model; vcii: one *_encoder_*.pth per hierarchy level (3)")],
        output: Annotated[Path, typer.Option("--output", "-o", help="checkpoint file to write")],
        lam: Annotated[float | None, typer.Option("--lambda", help="the lambda the weights were trained at (DVC's public model: 2048)")] = None) -> None:
    """Convert the authors' public weights into a weightstep checkpoint (refused at the first mismatching key)."""
    from baselines.neuralvc.training import convert_kind

    convert_kind(kind, [str(s) for s in sources], output, lam=lam)
    out.print(f"wrote {output}", markup=False, highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
