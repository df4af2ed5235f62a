"""The fuzzing benchmark's mutation engine: seed-file recipes and seeded mutants of real files.

Used by ``benchmarks/fuzz_decoders.py`` (through the command line, many thousands) and by
``tests/test_fuzz.py`` (in process, a seeded few hundred). Mutant kinds are described in
fuzz_decoders.py's docstring.
"""

from __future__ import annotations

import json
import random
import struct
import zlib

WSTP = b"WSTP"
TAGS = (b"ANCH", b"STEP", b"NETW", b"GOP_")  # a section's tag byte indexes this (weightstep/coding/container.py)


# ------------------------------------------------------------------------------------------ seeds

def seed_specs() -> list[tuple[str, str, dict[str, str]]]:
    """(label, codec, params) of every seed file."""
    ws = {"width": "8", "depth": "2", "anchor_steps": "5", "step_steps": "2", "device": "cpu", "fourier_features": "8",
          "dip_channels": "4", "dip_levels": "2"}
    specs = []
    for inr in ("siren", "fourier", "dip"):
        for update in ("l0", "dct", "dense"):
            specs.append((f"weightstep-{inr}-{update}", "weightstep", {**ws, "inr": inr, "update": update}))
    specs.append(("weightstep-grid-l0", "weightstep", {**ws, "inr": "grid", "grid_levels": "3", "grid_hidden": "4"}))
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


# ---------------------------------------------------------------------------------- our container

def split_container(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], dict] | None:
    """(the stream's header JSON, [(tag, payload)], the metadata) of a well-formed file, else None."""
    from weightstep.coding.container import Container
    from weightstep.errors import BitstreamError

    if data[:4] != WSTP:
        return None
    try:
        container = Container.from_bytes(data)
    except BitstreamError:
        return None
    header = json.dumps(container.header, sort_keys=True, separators=(",", ":")).encode("ascii")
    return header, [(tag.encode("ascii"), payload) for tag, payload in container.sections], {"codec": container.codec, **container.meta}


def join_container(header: bytes, sections: list[tuple[bytes, bytes]], count: int | None = None,
                   meta: dict | None = None) -> bytes:
    """A file with a valid CRC around whatever header text and sections it is given (a header that
    names a codec hands it to the metadata, where a reader looks for it)."""
    meta = dict(meta or {})
    try:
        obj = json.loads(header)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "codec" in obj:
        meta["codec"] = obj.pop("codec")
        header = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii", "replace")
    from weightstep.coding.framing import put_varint

    stream = bytearray()
    put_varint(stream, len(header))
    stream += header
    put_varint(stream, len(sections) if count is None else count)
    for tag, payload in sections:
        stream.append(TAGS.index(tag) if tag in TAGS else 0xFF)
        put_varint(stream, len(payload))
        stream += payload
    metadata = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("ascii", "replace")
    body = struct.pack("<HI", 2, len(metadata)) + metadata + struct.pack("<I", len(stream)) + bytes(stream)
    return WSTP + body + struct.pack("<I", zlib.crc32(body))


# settings that size what a decoder builds (a stream's header carries only those off their defaults)
SIZE_FIELDS = ["width", "depth", "grid_levels", "grid_hidden", "grid_context_hidden", "dip_channels", "dip_levels",
               "warp_grid", "fourier_features", "channels", "min_channels", "stem_hidden", "noise_channels", "gop",
               "inr", "update"]
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
        elif kind < 0.75:  # a config value (a stream at the defaults carries none: then one is added)
            key = rng.choice(sorted(config)) if config and rng.random() < 0.6 else rng.choice(SIZE_FIELDS)
            current = config.get(key, 8)
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
        header, sections, meta = parts
        if roll < 0.7:
            return "header", join_container(mutate_header(header, rng), sections, meta=meta)
        changed, count = mutate_sections(sections, rng)
        return "section", join_container(header, changed, count, meta=meta)
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
