"""``dvc``: DVC (Lu et al., CVPR 2019) with a real bitstream, from a checkpoint the user has or trained here.

Groups of ``gop`` frames: the first is a key frame coded by a conventional intra codec (x265
by default, crf from lambda with DVC's own pairing unless given), the others P-frames, each
predicted from the previous *decoded* frame (see :mod:`baselines.dvc.model`) and coded into
one ANS stream per group (:mod:`baselines.dvc.coding`). Frames are padded by edge
replication to a multiple of 64 and cropped back. Without a checkpoint nothing runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from baselines.dvc.coding import Models, decode_p, encode_p
from baselines.dvc.model import STRIDE, DvcArch, DvcNet, lambda_to_crf
from baselines.neuralvc.codec import NeuralVideoCodec, frame_progress, pack_group, recon_digest, unpack_group
from baselines.neuralvc.frames import crop, pad_to, padded_size, padding_note, to_tensor
from baselines.neuralvc.intra import INTRA_CODECS, X26X_PRESETS
from weightstep.codecs.base import Encoded
from weightstep.coding.container import Container
from weightstep.coding.entropy import SegmentReader, SegmentWriter
from weightstep.config import param
from weightstep.errors import BitstreamError
from weightstep.video import Video

_MODELS: dict[int, Models] = {}


@dataclass(frozen=True)
class DvcConfig:
    checkpoint: str | None = param(None, "checkpoint file (weightstep train dvc / weightstep convert dvc); "
                                   "required: an untrained network is never a baseline")
    lmbda: float | None = param(None, "the rate point's lambda; must equal the checkpoint's (protocols name "
                                "points by it, one checkpoint per point)", low=1e-6, high=1e9)
    gop: int = param(12, "frames per group: one key frame then P-frames (12 as DVC's evaluations)", low=1, high=10000)
    intra_codec: str = param("x265", "conventional intra codec of the key frames", choices=tuple(INTRA_CODECS))
    intra_crf: float | None = param(None, "key-frame crf; none = from lambda as DVC pairs them "
                                    "(2048: 20, 1024: 23, 512: 26, 256: 29)", low=0, high=51)
    intra_preset: str = param("medium", "key-frame encoder preset", choices=X26X_PRESETS)
    device: str = param("auto", "torch device: auto (CUDA when present), cpu, cuda[:N]; decode where you encoded "
                        "for a bit-exact reconstruction")

    aliases = {"lambda": "lmbda"}


class DvcCodec(NeuralVideoCodec):
    name = "dvc"
    kind = "dvc"
    stride = STRIDE
    Config = DvcConfig
    ENCODER_ONLY = frozenset({"checkpoint", "lmbda", "intra_crf", "intra_preset", "device"})
    STREAM_DEFAULTS = {1: {"checkpoint": None, "lmbda": None, "gop": 12, "intra_codec": "x265", "intra_crf": None,
                           "intra_preset": "medium", "device": "auto"}}
    summary = "DVC (Lu et al. 2019): flow + motion/residual autoencoders, constriction-coded; needs a checkpoint"

    def build_network(self, record: dict) -> DvcNet:
        return DvcNet(DvcArch.from_json(record["architecture"]))

    def intra_crf(self, info: dict) -> float:
        if self.config.intra_crf is not None:
            return float(self.config.intra_crf)
        lam = self.config.lmbda if self.config.lmbda is not None else info.get("lambda")
        return float(lambda_to_crf(lam)) if lam else 23.0

    @staticmethod
    def _models(net: DvcNet) -> Models:
        key = id(net)
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = Models(net)
        return _MODELS[key]

    def encode(self, video: Video) -> Encoded:
        info, net, digest = self.network()
        device = next(net.parameters()).device
        models = self._models(net)
        h, w = video.height, video.width
        ph, pw = padded_size(h, w, STRIDE)
        crf = self.intra_crf(info)
        rgb = video.rgb()
        sections, per_frame, recon_frames = [], [], []
        estimates = {"mv": 0.0, "z": 0.0, "y": 0.0, "exact": 0.0}
        per_frame_estimate: list[float | None] = []
        intra_bytes = 0
        p_bytes = 0
        with frame_progress("dvc encode", video.frames) as tick:
            for start in range(0, video.frames, self.config.gop):
                key_bytes, reference = self.code_key(video, start, crf)
                intra_bytes += len(key_bytes)
                per_frame.append(8 * len(key_bytes))
                per_frame_estimate.append(None)
                recon_frames.append(reference[0].numpy())
                tick()
                reference = pad_to(reference.to(device), ph, pw)
                writer = SegmentWriter()
                for t in range(start + 1, min(start + self.config.gop, video.frames)):
                    frame = pad_to(to_tensor(rgb[t]).to(device), ph, pw)
                    reference, estimate = encode_p(net, models, frame, reference, writer)
                    for k in estimates:
                        estimates[k] += estimate[k]
                    per_frame.append(None)
                    per_frame_estimate.append(estimate["mv"] + estimate["z"] + estimate["y"])
                    recon_frames.append(crop(reference, h, w)[0].cpu().numpy())
                    tick()
                rest = writer.finish()
                p_bytes += len(rest)
                sections.append(("GOP_", pack_group(key_bytes, rest, writer.checksum())))
        recon = np.stack(recon_frames).astype(np.float32)
        note = padding_note(h, w, STRIDE)
        data, payload = self.write(video, digest, sections)
        estimated = estimates["mv"] + estimates["z"] + estimates["y"]
        extra: dict[str, Any] = {
            "intra": f"{self.config.intra_codec} intra, crf {crf:g}, preset {self.config.intra_preset}",
            "intra_bytes": intra_bytes, "p_frame_bytes": p_bytes, "p_frame_estimated_bits": estimated,
            "p_frame_estimated_bits_by_latent": {k: estimates[k] for k in ("mv", "z", "y")},
            "p_frame_information_bits_float64": estimates["exact"], "per_frame_estimated_bits": per_frame_estimate,
            "padding": note or "none (frame size is a multiple of 64)",
            "checkpoint": {k: info.get(k) for k in ("lambda", "steps", "data", "source", "architecture")},
            "weights": digest, "reconstruction_md5": recon_digest(recon),
            "estimated_bits_scope": "P-frame latents only, under the model's own densities; key frames are "
                                    "coded by the intra codec and counted at their real size",
        }
        return Encoded(data=data, payload_bytes=payload, per_frame_bits=per_frame, estimated_bits=estimated, extra=extra)

    def decode(self, data: bytes) -> Video:
        container, codec, w, h, n, matrix = self.open_stream(data)
        return codec.decode_groups(container, w, h, n, matrix)

    def decode_groups(self, container: Container, w: int, h: int, n: int, matrix: str) -> Video:
        """The frames of a parsed stream, this codec's settings being the stream's."""
        ph, pw = padded_size(h, w, STRIDE)
        _, net, digest = self.network()
        self.check_weights(container, digest)
        device = next(net.parameters()).device
        models = self._models(net)
        out = np.empty((n, 3, h, w), dtype=np.float32)
        with frame_progress("dvc decode", n) as tick:
            for g, payload in enumerate(container.sections_tagged("GOP_")):
                start = g * self.config.gop
                key_bytes, checksum, rest = unpack_group(payload)
                reference = self.decode_key(key_bytes, w, h, matrix)
                out[start] = reference[0].numpy()
                tick()
                reference = pad_to(reference.to(device), ph, pw)
                count = min(self.config.gop, n - start) - 1
                if count == 0:
                    if rest or checksum:
                        raise BitstreamError(f"GOP_ section {g}: data after a lone key frame")
                    continue
                reader = SegmentReader(rest, f"GOP {g} P-frames")
                for t in range(start + 1, start + 1 + count):
                    reference = decode_p(net, models, reference, reader)
                    out[t] = crop(reference, h, w)[0].cpu().numpy()
                    tick()
                reader.finish(checksum)
        return Video(identity=f"decoded:{self.name}", fps=container.header["fps"], rgb_frames=out, matrix=matrix)
