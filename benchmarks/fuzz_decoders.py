"""Fuzz every decoder with damaged and hostile files; print what each mutant ended in.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_decoders.py --mutants 10000 --workers 2

Seed files: a real, tiny encode (3 frames, 32x32, few steps) of every codec family: the weight-step
codec with each anchor network (siren, fourier, dip) and each update kind (l0, dct, dense), both
schedules; full-mlp (siren, fourier), full-cnn, nerv; x264, x265, svtav1, vp9. They are made in a
child process (``--make-seeds``) so that this process never runs torch before it forks.

Mutants (seeded; each draws one kind):

- ``truncate``: the file cut at a random length;
- ``flip``: 1-8 random bit flips anywhere (our files: they stop at a CRC);
- ``header`` (our container, CRC recomputed): a hostile header: huge or zero geometry, huge frame
  counts, config values set to huge / negative / non-finite / wrongly typed values, keys
  removed, added or renamed, the codec renamed;
- ``section`` (our container, CRCs recomputed): a section's payload mutated (bytes flipped,
  set to 0x00 / 0xff, inserted, deleted: tensor counts, ranks, shapes, steps, blob lengths),
  sections dropped, duplicated, swapped or retagged, the section count changed;
- ``resign`` (Matroska): packets and global header of the elementary stream damaged, then
  re-muxed with a *valid* stream checksum, so the damage reaches libav's decoders.

Each mutant is decoded by ``weightstep decode FILE -o OUT.y4m`` in a forked child of this process
(the command line's own code path, stdout and stderr captured), with
``WEIGHTSTEP_DECODE_MEMORY`` set (``--limit``, default 1500M) and a wall-clock timeout. A mutant
passes when it ends in exit code 2 with exactly one line on stderr and no traceback, or in exit
code 0 with a readable .y4m of at least one frame. Peak RSS per child comes from ``wait4``
(``ru_maxrss``; it includes the ~0.5 GB the parent holds with torch and PyAV imported).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not an installed copy
sys.path.insert(1, str(Path(__file__).resolve().parent))

from fuzz_mutants import mutants, seed_specs  # noqa: E402

# ------------------------------------------------------------------------------------------ seeds

def make_seeds(folder: Path) -> None:
    """Encode every seed (run in a child process: torch computes here, never in the forking parent)."""
    import torch

    from weightstep import registry
    from weightstep.video.options import ReadOptions
    from weightstep.video.readers import open_video

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    clip = open_video("synthetic:testsrc2", ReadOptions(frames=3, synthetic_width=32, synthetic_height=32))
    assert (clip.frames, clip.width, clip.height) == (3, 32, 32)
    for label, codec, params in seed_specs():
        instance = registry.create(codec, params)
        torch.manual_seed(0)
        (folder / f"{label}{instance.suffix}").write_bytes(instance.encode(clip).data)


# ---------------------------------------------------------------------------------- running

def _decode_here(path: str, out: str, log: str) -> int:
    """Run `weightstep decode PATH -o OUT` in this process, stdout and stderr into ``log``; its exit code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 1
    try:
        from weightstep.cli import main

        sys.argv = ["weightstep", "decode", path, "-o", out]
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - an escaped exception is what the fuzzer looks for
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for handle in (fd, *saved):
            os.close(handle)
    return code


def _batch_child(items: list[tuple[int, str, str, str]], progress: str) -> None:
    """In a forked child: decode each mutant in turn, writing 'start I' and 'end I CODE SECONDS' lines."""
    code = 0
    try:
        with open(progress, "w", buffering=1) as out:
            for index, path, target, log in items:
                out.write(f"start {index}\n")
                began = time.perf_counter()
                result = _decode_here(path, target, log)
                out.write(f"end {index} {result} {time.perf_counter() - began:.4f}\n")
    except BaseException:  # noqa: BLE001
        code = 3
    os._exit(code)


def _valid_y4m(path: Path) -> bool:
    """A .y4m with a well-formed header and a whole number (>= 1) of 4:2:0 frames of its size."""
    try:
        with open(path, "rb") as handle:
            header = handle.readline(1024)
        fields = header.decode("ascii").split()
        if fields[0] != "YUV4MPEG2":
            return False
        size = {f[0]: f[1:] for f in fields[1:]}
        width, height = int(size["W"]), int(size["H"])
        depth = 2 if "p10" in size.get("C", "") else 1
        frame = 6 + depth * (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2))
        body = path.stat().st_size - len(header)
        return width > 0 and height > 0 and body >= frame and body % frame == 0
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError):
        return False


def _warm_up(work: Path) -> None:
    """Run the command line once here (a refused decode), so that children inherit every import."""
    from weightstep.cli import main

    missing = work / "missing.wsv"
    saved = sys.argv, os.dup(2)
    sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    try:
        sys.argv = ["weightstep", "decode", str(missing), "-o", str(work / "x.y4m")]
        main()
    except SystemExit:
        pass
    finally:
        os.dup2(saved[1], 2)
        os.close(sink)
        sys.argv = saved[0]


def judge(code: int | None, text: str, out: Path) -> str:
    """'refused', 'decoded', or a failure: 'traceback', 'hang', 'bad-exit', 'bad-message', 'bad-output'."""
    if code is None:
        return "hang"
    if "Traceback" in text:
        return "traceback"
    if code == 2:
        lines = [line for line in text.splitlines() if line.strip()]
        return "refused" if len(lines) == 1 and lines[0].startswith("weightstep: error:") else "bad-message"
    if code == 0:
        return "decoded" if _valid_y4m(out) else "bad-output"
    return "bad-exit"


def run(args: argparse.Namespace) -> int:
    os.environ["WEIGHTSTEP_DECODE_MEMORY"] = args.limit
    os.environ["WEIGHTSTEP_PROGRESS"] = "0"
    seeds_dir = Path(args.seeds) if args.seeds else Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))
    if not any(seeds_dir.glob("*")):
        subprocess.run([sys.executable, __file__, "--make-seeds", str(seeds_dir)], check=True, cwd=ROOT)
    seeds = {p.name: p.read_bytes() for p in sorted(seeds_dir.iterdir())}
    import torch  # imported before forking, so children start warm; it never computes in this process

    import baselines.conventional  # noqa: F401
    import baselines.full_cnn  # noqa: F401
    import baselines.full_mlp  # noqa: F401
    import baselines.nerv  # noqa: F401
    import weightstep.cli  # noqa: F401
    import weightstep.codecs.harness  # noqa: F401
    import weightstep.codecs.weightstep_codec  # noqa: F401
    import weightstep.video.readers  # noqa: F401
    import weightstep.video.writers  # noqa: F401

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    _warm_up(work)
    outcomes: Counter = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    by_seed: dict[str, Counter] = defaultdict(Counter)
    failures: list[str] = []
    times: list[float] = []
    peak_kb, slowest = 0, 0.0
    meta: dict[int, tuple[str, str]] = {}  # mutant index -> (seed label, kind)
    queue: list[int] = []
    running: dict[int, dict] = {}  # child pid -> its batch
    stream = mutants(seeds, args.mutants, args.seed)
    started = time.perf_counter()
    exhausted = False
    done = 0

    def files(index: int) -> tuple[str, str, str]:
        return str(work / f"m{index}.bin"), str(work / f"m{index}.y4m"), str(work / f"m{index}.log")

    def record(index: int, verdict: str, elapsed: float, text: str) -> None:
        nonlocal done, slowest
        label, kind = meta.pop(index)
        outcomes[verdict] += 1
        by_kind[kind][verdict] += 1
        by_seed[label][verdict] += 1
        times.append(elapsed)
        slowest = max(slowest, elapsed)
        path, out, log = files(index)
        if verdict not in ("refused", "decoded"):
            keep = work / f"failure-{len(failures)}-{label}-{kind}"
            os.replace(path, keep)
            failures.append(f"{verdict}: {label} {kind} -> {keep} ({text.strip().splitlines()[-1:]})")
        if args.verbose:
            print(f"{elapsed:6.2f} s {verdict:9} {label} {kind}: {text.strip().splitlines()[-1][:150] if text.strip() else ''}",
                  flush=True)
        for leftover in (path, out, log):
            if os.path.exists(leftover):
                os.unlink(leftover)
        done += 1
        if done % 500 == 0:
            print(f"  {done} mutants, {time.perf_counter() - started:.0f} s: {dict(outcomes)}", flush=True)

    def progress_of(batch: dict) -> tuple[list[tuple[int, int, float]], int | None]:
        """(finished (index, code, seconds)), the index started but not finished."""
        finished, current = [], None
        try:
            lines = Path(batch["progress"]).read_text().splitlines()
        except OSError:
            return finished, None
        for line in lines:
            parts = line.split()
            if parts[:1] == ["start"] and len(parts) == 2:
                current = int(parts[1])
            elif parts[:1] == ["end"] and len(parts) == 4:
                finished.append((int(parts[1]), int(parts[2]), float(parts[3])))
                current = None
        return finished, current

    def settle(pid: int, status: int, usage) -> None:
        nonlocal peak_kb
        batch = running.pop(pid)
        peak_kb = max(peak_kb, usage.ru_maxrss)
        finished, current = progress_of(batch)
        for index, code, elapsed in finished:
            _, out, log = files(index)
            text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
            record(index, judge(code, text, Path(out)), elapsed, text)
        seen = {index for index, _, _ in finished}
        if current is not None:
            _, _, log = files(current)
            text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
            if batch["killed"]:
                record(current, "hang", args.timeout, text)
            else:  # the child died inside a decode (a crash, or the kernel killed it for memory)
                record(current, "bad-exit", 0.0, text + f"\n(child ended with status {status})")
            seen.add(current)
        queue[:0] = [i for i in batch["items"] if i not in seen]  # not reached: run them again
        os.unlink(batch["progress"])

    def reap() -> None:
        while running:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                return
            settle(pid, status, usage)

    def watch() -> None:
        now = time.monotonic()
        for pid, batch in running.items():
            if batch["killed"]:
                continue
            finished, current = progress_of(batch)
            marker = (current, len(finished))
            if marker != batch["marker"]:
                batch["marker"], batch["since"] = marker, now
            elif current is not None and now - batch["since"] > args.timeout:
                os.kill(pid, signal.SIGKILL)
                batch["killed"] = True

    batches, made = 0, 0
    while True:
        while not exhausted and len(queue) < args.batch * args.workers:
            if args.max_seconds and time.perf_counter() - started > args.max_seconds:
                print(f"  --max-seconds {args.max_seconds:g} reached: no more mutants are made", flush=True)
                exhausted = True
                break
            try:
                label, kind, data = next(stream)
            except StopIteration:
                exhausted = True
                break
            index = made
            made += 1
            meta[index] = (label, kind)
            Path(files(index)[0]).write_bytes(data)
            queue.append(index)
        if not queue and not running:
            break
        while queue and len(running) < args.workers:
            items, queue[:] = queue[:args.batch], queue[args.batch:]
            progress = str(work / f"batch{batches}.progress")
            batches += 1
            pid = os.fork()
            if pid == 0:
                _batch_child([(i, *files(i)) for i in items], progress)
            running[pid] = {"items": items, "progress": progress, "killed": False, "marker": None,
                            "since": time.monotonic()}
        reap()  # first: a child that already ended must not be judged by the clock
        watch()
        time.sleep(0.05)
    total = time.perf_counter() - started
    print(f"\n{done} mutants of {len(seeds)} seed files in {total:.0f} s ({args.workers} workers, batches of "
          f"{args.batch}), "
          f"decode memory limit {args.limit}, timeout {args.timeout:g} s")
    print(f"outcomes: {dict(outcomes)}")
    times.sort()
    print(f"peak RSS of any decode (the max over each child's batch): {peak_kb / 1024:.0f} MiB; decode time median {times[len(times) // 2]:.2f} s, "
          f"99th percentile {times[int(0.99 * (len(times) - 1))]:.2f} s, slowest {slowest:.1f} s")
    print("\n| mutant kind | " + " | ".join(VERDICTS) + " |\n|---|" + "---|" * len(VERDICTS))
    for kind in sorted(by_kind):
        print(f"| {kind} | " + " | ".join(str(by_kind[kind][v]) for v in VERDICTS) + " |")
    print("\n| seed file | " + " | ".join(VERDICTS) + " |\n|---|" + "---|" * len(VERDICTS))
    for label in sorted(by_seed):
        print(f"| {label} | " + " | ".join(str(by_seed[label][v]) for v in VERDICTS) + " |")
    for line in failures[:50]:
        print(line)
    return 0 if not failures else 1


VERDICTS = ("refused", "decoded", "traceback", "hang", "bad-exit", "bad-message", "bad-output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="mutants decoded one after another by each forked child")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds one decode may go without finishing before it counts as a hang")
    parser.add_argument("--limit", default="1500M", help="WEIGHTSTEP_DECODE_MEMORY of every decode")
    parser.add_argument("--verbose", action="store_true", help="one line per mutant")
    parser.add_argument("--max-seconds", type=float, default=None, help="start no more mutants after this")
    parser.add_argument("--seeds", help="folder of seed files (made when empty or not given)")
    parser.add_argument("--make-seeds", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_seeds:
        make_seeds(Path(args.make_seeds))
        return 0
    if args.mutants < 1 or args.workers < 1:
        parser.error("--mutants and --workers must be at least 1")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
