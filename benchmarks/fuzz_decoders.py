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
import json
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout, not an installed copy
WSTP = b"WSTP"
_PRE = struct.Struct("<4sHIII")
_SEC = struct.Struct("<4sII")

# ------------------------------------------------------------------------------------------ seeds

def seed_specs() -> list[tuple[str, str, dict[str, str]]]:
    """(label, codec, params) of every seed file."""
    ws = {"width": "8", "depth": "2", "anchor_steps": "5", "step_steps": "2", "device": "cpu", "fourier_features": "8",
          "dip_channels": "4", "dip_levels": "2"}
    specs = []
    for inr in ("siren", "fourier", "dip"):
        for update in ("l0", "dct", "dense"):
            specs.append((f"weightstep-{inr}-{update}", "weightstep", {**ws, "inr": inr, "update": update}))
    specs.append(("weightstep-siren-l0-single", "weightstep", {**ws, "inr": "siren", "schedule": "single-stage"}))
    specs.append(("weightstep-dip-gop", "weightstep", {**ws, "inr": "dip", "gop": "2"}))
    specs.append(("full-mlp-siren", "full-mlp", {"width": "8", "depth": "2", "epochs": "2", "device": "cpu"}))
    specs.append(("full-mlp-fourier", "full-mlp", {"inr": "fourier", "width": "8", "depth": "2",
                                                   "fourier_features": "8", "epochs": "2", "device": "cpu"}))
    specs.append(("full-cnn", "full-cnn", {"dip_channels": "4", "dip_levels": "2", "epochs": "2", "device": "cpu"}))
    specs.append(("full-cnn-pruned", "full-cnn", {"dip_channels": "4", "dip_levels": "2", "epochs": "2",
                                                  "prune": "0.5", "finetune_epochs": "1", "device": "cpu"}))
    specs.append(("nerv", "nerv", {"channels": "8", "min_channels": "4", "stem_hidden": "8", "epochs": "2",
                                   "finetune_epochs": "1", "prune": "0.3", "device": "cpu"}))
    specs.append(("x264", "x264", {"preset": "ultrafast"}))
    specs.append(("x265", "x265", {"preset": "ultrafast"}))
    specs.append(("svtav1", "svtav1", {"preset": "12"}))
    specs.append(("vp9", "vp9", {"cpu_used": "8", "deadline": "realtime"}))
    return specs


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


# ---------------------------------------------------------------------------------- our container

def split_container(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
    """(header JSON, [(tag, payload)]) of a well-formed file, else None."""
    if len(data) < _PRE.size or data[:4] != WSTP:
        return None
    _, _, count, length, _ = _PRE.unpack_from(data)
    header, pos, sections = data[_PRE.size:_PRE.size + length], _PRE.size + length, []
    for _ in range(count):
        tag, size, _ = _SEC.unpack_from(data, pos)
        sections.append((tag, data[pos + _SEC.size:pos + _SEC.size + size]))
        pos += _SEC.size + size
    return header, sections


def join_container(header: bytes, sections: list[tuple[bytes, bytes]], count: int | None = None) -> bytes:
    """A file with valid CRCs around whatever header text and sections it is given."""
    fixed = struct.pack("<HII", 1, len(sections) if count is None else count, len(header))
    out = bytearray(WSTP + fixed + struct.pack("<I", zlib.crc32(fixed + header)) + header)
    for tag, payload in sections:
        head = tag + struct.pack("<I", len(payload))
        out += head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload
    return bytes(out)


HOSTILE_NUMBERS = [0, -1, 1, 2, 3, 7, 255, 4096, 16384, 16385, 65535, 10**6, 10**9, 2**31 - 1, 2**31, 2**53, 2**63,
                   10**30, -(2**31), 0.5, -0.5, 1e-300, 1e300, "1e999", "-1e999", "NaN", "Infinity"]
HOSTILE_OTHERS = [None, True, False, "", "x" * 300, "siren", "dip", "fourier", "nerv", [], [1, 2], {}, {"a": 1}]


def _json_value(value) -> str:
    return value if isinstance(value, str) and value in ("1e999", "-1e999", "NaN", "Infinity") else json.dumps(value)


def _dump(obj: dict, raw: dict[str, str]) -> bytes:
    """Canonical JSON with some values given as raw text (non-finite numbers JSON cannot spell)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    for marker, literal in raw.items():
        text = text.replace(json.dumps(marker), literal)
    return text.encode("ascii", "replace")


def mutate_header(header: bytes, rng: random.Random) -> bytes:
    obj = json.loads(header)
    raw: dict[str, str] = {}

    def hostile(key: str):
        value = rng.choice(HOSTILE_NUMBERS + HOSTILE_OTHERS)
        if isinstance(value, str) and value in ("1e999", "-1e999", "NaN", "Infinity"):
            marker = f"@@raw{len(raw)}@@"
            raw[marker] = value
            return marker
        return value

    config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.3:  # geometry and counts
            key = rng.choice(["width", "height", "frames", "fps", "bit_depth", "format"])
            obj[key] = rng.choice([16384, 16384, 8192, 4096, 2048, 1, 0, 100000, 100001, 2**31]) \
                if rng.random() < 0.6 else hostile(key)
            if key in ("width", "height") and rng.random() < 0.5:
                obj["width"], obj["height"] = obj[key], obj[key]
        elif kind < 0.75 and config:  # a config value
            key = rng.choice(sorted(config))
            current = config[key]
            if isinstance(current, bool) or not isinstance(current, (int, float)) or rng.random() < 0.4:
                config[key] = hostile(key)
            else:
                config[key] = rng.choice([current * 2, current * 64, current * 1024, 4096, 32, 1024, 8, 1, 0, -1])
                if isinstance(current, int) and not isinstance(current, bool):
                    config[key] = int(config[key])
        elif kind < 0.85:  # keys removed or added
            target = config if config and rng.random() < 0.5 else obj
            if target and rng.random() < 0.5:
                target.pop(rng.choice(sorted(target)))
            else:
                target[rng.choice(["extra", "width ", "Width", "seeds", "sections"])] = hostile("x")
        elif kind < 0.92:
            obj["codec"] = rng.choice(["weightstep", "full-mlp", "full-cnn", "nerv", "x264", "nope", "", 7])
        else:
            obj["seeds"] = rng.choice([{"network": 2**62}, {"network": -1}, {"network": "a"}, [], None])
    if config:
        obj["config"] = config
    return _dump(obj, raw)


def mutate_payload(payload: bytes, rng: random.Random) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        # most damage near the start, where counts, flags, ranks, shapes and lengths live
        limit = len(data) if rng.random() < 0.3 or not data else min(len(data), 48)
        pos = rng.randrange(limit) if limit else 0
        action = rng.random()
        if not data or action < 0.15:
            data[pos:pos] = bytes(rng.choice([[0x00], [0xff], [0x80, 0x80, 0x80, 0x80, 0x0f], [0xff] * 5,
                                              [rng.randrange(256)]]))
        elif action < 0.3:
            del data[pos:pos + rng.randint(1, 8)]
        elif action < 0.55:
            data[pos] = rng.choice([0x00, 0x01, 0x7f, 0x80, 0xff])
        else:
            data[pos] ^= 1 << rng.randrange(8)
    return bytes(data)


def mutate_sections(sections: list[tuple[bytes, bytes]], rng: random.Random) -> tuple[list, int | None]:
    sections = list(sections)
    count = None
    action = rng.random()
    if action < 0.6 or len(sections) < 2:
        i = rng.randrange(len(sections))
        sections[i] = (sections[i][0], mutate_payload(sections[i][1], rng))
    elif action < 0.7:
        sections.pop(rng.randrange(len(sections)))
    elif action < 0.8:
        i = rng.randrange(len(sections))
        sections.insert(i, sections[i])
    elif action < 0.88:
        i, j = rng.sample(range(len(sections)), 2)
        sections[i], sections[j] = sections[j], sections[i]
    elif action < 0.95:
        i = rng.randrange(len(sections))
        sections[i] = (rng.choice([b"ANCH", b"STEP", b"NETW", b"XXXX"]), sections[i][1])
    else:
        count = rng.choice([0, len(sections) + 1, 2**20, 2**32 - 1])
    return sections, count


# ---------------------------------------------------------------------------------- Matroska

def resign(data: bytes, rng: random.Random) -> bytes | None:
    """Damage the elementary stream of one of our Matroska files and re-mux it with a valid checksum."""
    import io

    import av

    from baselines.conventional import CHECKSUM_TAG, TAG_PREFIX, stream_digest

    try:
        with av.open(io.BytesIO(data)) as source:
            stream = source.streams.video[0]
            tags = {k: v for k, v in source.metadata.items() if k.startswith(TAG_PREFIX) and k != CHECKSUM_TAG}
            packets = [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in source.demux(stream) if p.size]
            extradata = bytes(stream.codec_context.extradata or b"")
            buffer = io.BytesIO()
            with av.open(buffer, "w", format="matroska") as target:
                out = target.add_stream_from_template(stream, opaque=True)
                if extradata and rng.random() < 0.3:
                    out.codec_context.extradata = mutate_payload(extradata, rng)
                if rng.random() < 0.2:
                    tags["WEIGHTSTEP_FRAMES"] = str(rng.choice([0, 1, 2, 1000, 10**6, 10**12]))
                chosen = {rng.randrange(len(packets)) for _ in range(rng.randint(1, 3))}
                mutated = []
                for index, (pts, dts, key, payload) in enumerate(packets):
                    if index in chosen:
                        payload = mutate_payload(payload, rng) or b"\x00"
                    mutated.append((pts, dts, key, payload))
                if rng.random() < 0.15 and len(mutated) > 1:
                    mutated.pop(rng.randrange(len(mutated)))
                target.metadata.update(tags)
                # the checksum must be known before the header is written: compute it on the packets as muxed
                fake = [av.Packet(p) for _, _, _, p in mutated]
                for packet, (pts, dts, key, _) in zip(fake, mutated, strict=True):
                    packet.pts, packet.dts, packet.is_keyframe = pts, dts, key
                target.metadata[CHECKSUM_TAG] = stream_digest(tags, out.codec_context.extradata, fake)
                for packet in fake:
                    packet.stream = out
                    target.mux(packet)
        return buffer.getvalue()
    except Exception:  # noqa: BLE001 - a mutant libav will not even write is simply not used
        return None


# ---------------------------------------------------------------------------------- mutants

def mutant(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    parts = split_container(data)
    ours = parts is not None
    roll = rng.random()
    if roll < 0.15:
        return "truncate", data[:rng.randrange(len(data))]
    if roll < 0.35:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return "flip", bytes(out)
    if ours:
        header, sections = parts
        if roll < 0.7:
            return "header", join_container(mutate_header(header, rng), sections)
        changed, count = mutate_sections(sections, rng)
        return "section", join_container(header, changed, count)
    signed = resign(data, rng)
    if signed is None:
        return "flip", data[:-1]
    return "resign", signed


def mutants(seeds: dict[str, bytes], count: int, seed: int):
    """``count`` (label, kind, bytes) drawn round-robin over the seed files."""
    rng = random.Random(seed)
    labels = sorted(seeds)
    for i in range(count):
        label = labels[i % len(labels)]
        kind, data = mutant(seeds[label], rng)
        yield label, kind, data


# ---------------------------------------------------------------------------------- running

def _child(path: str, out: str, log: str) -> None:
    """In the forked child: run `weightstep decode` with stdout and stderr going to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
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
    peak_kb, slowest = 0, 0.0
    times: list[float] = []
    running: dict[int, tuple] = {}
    stream = mutants(seeds, args.mutants, args.seed)
    started = time.perf_counter()
    done = 0

    def reap(block: bool) -> None:
        nonlocal peak_kb, slowest, done
        while running:
            pid, status, usage = os.wait4(-1, 0 if block else os.WNOHANG)
            if pid == 0:
                break
            label, kind, path, out, log, t0, killed = running.pop(pid)
            elapsed = time.monotonic() - t0
            code = None if killed else (os.waitstatus_to_exitcode(status))
            text = Path(log).read_text(errors="replace")
            verdict = judge(code if code is None or code >= 0 else 128 - code, text, Path(out))
            outcomes[verdict] += 1
            by_kind[kind][verdict] += 1
            by_seed[label][verdict] += 1
            peak_kb, slowest = max(peak_kb, usage.ru_maxrss), max(slowest, elapsed)
            times.append(elapsed)
            if args.verbose:
                print(f"{elapsed:6.2f} s {usage.ru_maxrss / 1024:6.0f} MiB {verdict:9} {label} {kind}: "
                      f"{text.strip().splitlines()[-1][:150] if text.strip() else ''}", flush=True)
            if verdict not in ("refused", "decoded"):
                keep = work / f"failure-{len(failures)}-{label}-{kind}"
                os.replace(path, keep)
                failures.append(f"{verdict}: {label} {kind} -> {keep} ({text.strip().splitlines()[-1:]})")
            for leftover in (path, out, log):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            done += 1
            if done % 500 == 0:
                print(f"  {done} mutants, {time.perf_counter() - started:.0f} s: {dict(outcomes)}", flush=True)
            block = False

    for index, (label, kind, data) in enumerate(stream):
        while len(running) >= args.workers:
            now = time.monotonic()
            for pid, entry in list(running.items()):
                if not entry[6] and now - entry[5] > args.timeout:
                    os.kill(pid, signal.SIGKILL)
                    running[pid] = (*entry[:6], True)
            reap(block=False)
            if len(running) >= args.workers:
                time.sleep(0.002)
        path = str(work / f"m{index}.bin")
        Path(path).write_bytes(data)
        out, log = str(work / f"m{index}.y4m"), str(work / f"m{index}.log")
        pid = os.fork()
        if pid == 0:
            _child(path, out, log)
        running[pid] = (label, kind, path, out, log, time.monotonic(), False)
    deadline = time.monotonic() + args.timeout + 5
    while running and time.monotonic() < deadline + 60:
        now = time.monotonic()
        for pid, entry in list(running.items()):
            if not entry[6] and now - entry[5] > args.timeout:
                os.kill(pid, signal.SIGKILL)
                running[pid] = (*entry[:6], True)
        reap(block=False)
        time.sleep(0.01)
    total = time.perf_counter() - started
    print(f"\n{done} mutants of {len(seeds)} seed files in {total:.0f} s ({args.workers} workers), "
          f"decode memory limit {args.limit}, timeout {args.timeout:g} s")
    print(f"outcomes: {dict(outcomes)}")
    times.sort()
    print(f"peak RSS of any decode: {peak_kb / 1024:.0f} MiB; decode time median {times[len(times) // 2]:.2f} s, "
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
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a decode counts as a hang")
    parser.add_argument("--limit", default="1500M", help="WEIGHTSTEP_DECODE_MEMORY of every decode")
    parser.add_argument("--verbose", action="store_true", help="one line per mutant")
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
