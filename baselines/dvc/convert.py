"""Converting the state dict of the widely used PyTorch DVC re-implementation onto our modules.

That project saves ``VideoCompressor.state_dict()`` (one file, ``iterN.model``) with the
top-level modules ``opticFlow, mvEncoder, mvDecoder, warpnet, resEncoder, resDecoder,
respriorEncoder, respriorDecoder, bitEstimator_z, bitEstimator_mv``; its loader keeps only the
keys that happen to match and drops the rest silently. Here every key is renamed by the rules
below and the result must match the paper-size :class:`~baselines.dvc.model.DvcNet`
exactly: the first missing, unexpected or differently shaped key (named in the public
layout) refuses the file.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from baselines.dvc.model import PRESETS, DvcNet
from baselines.neuralvc.checkpoint import check_state_dict, load_file, make_record
from weightstep.errors import InputError

# (public pattern, our template): groups are named a, b, c in order; {a1} is group a minus one
# (the public layout counts layers from 1), {b_param} maps h/b/a to our parameter lists.
_RULES: list[tuple[str, str]] = [
    (r"opticFlow\.moduleBasic\.(\d+)\.conv(\d+)\.(weight|bias)", "flow.levels.{a}.layers.{b1}.{c}"),
    (r"mvEncoder\.conv(\d+)\.(weight|bias)", "motion_encoder.layers.{a1}.{b}"),
    (r"mvDecoder\.deconv(\d+)\.(weight|bias)", "motion_decoder.layers.{a1}.{b}"),
    (r"warpnet\.feature_ext\.(weight|bias)", "compensation.head.{a}"),
    (r"warpnet\.conv([0-5])\.conv1\.(weight|bias)", "compensation.blocks.{a}.conv_a.{b}"),
    (r"warpnet\.conv([0-5])\.conv2\.(weight|bias)", "compensation.blocks.{a}.conv_b.{b}"),
    (r"warpnet\.conv6\.(weight|bias)", "compensation.tail.{a}"),
    (r"resEncoder\.conv(\d+)\.(weight|bias)", "residual_encoder.convs.{a1}.{b}"),
    (r"resEncoder\.gdn(\d+)\.(beta|gamma)", "residual_encoder.gdns.{a1}.{b}"),
    (r"resDecoder\.deconv(\d+)\.(weight|bias)", "residual_decoder.convs.{a1}.{b}"),
    (r"resDecoder\.igdn(\d+)\.(beta|gamma)", "residual_decoder.gdns.{a1}.{b}"),
    (r"respriorEncoder\.conv(\d+)\.(weight|bias)", "hyper_encoder.convs.{a1}.{b}"),
    (r"respriorDecoder\.deconv(\d+)\.(weight|bias)", "hyper_decoder.convs.{a1}.{b}"),
    (r"bitEstimator_z\.f(\d+)\.(h|b|a)", "z_prior.{b_param}.{a1}"),
    (r"bitEstimator_mv\.f(\d+)\.(h|b|a)", "mv_prior.{b_param}.{a1}"),
]
_PARAM = {"h": "hs", "b": "bs", "a": "as_"}


def public_to_ours(key: str) -> str | None:
    """Our parameter name for a public DVC key, or None when no rule covers it."""
    for pattern, template in _RULES:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            fields: dict[str, Any] = {}
            for name, value in zip("abc", groups, strict=False):
                fields[name] = value
                if value.isdigit():
                    fields[f"{name}1"] = int(value) - 1
                if value in _PARAM:
                    fields[f"{name}_param"] = _PARAM[value]
            try:
                out = template.format(**fields)
            except (KeyError, IndexError):
                return None
            return None if "-1" in out.split(".") else out
    return None


_INVERSE: list[tuple[str, str]] = [
    (r"flow\.levels\.(\d+)\.layers\.(\d+)\.(\w+)", "opticFlow.moduleBasic.{0}.conv{1+}.{2}"),
    (r"motion_encoder\.layers\.(\d+)\.(\w+)", "mvEncoder.conv{0+}.{1}"),
    (r"motion_decoder\.layers\.(\d+)\.(\w+)", "mvDecoder.deconv{0+}.{1}"),
    (r"compensation\.head\.(\w+)", "warpnet.feature_ext.{0}"),
    (r"compensation\.blocks\.(\d+)\.conv_a\.(\w+)", "warpnet.conv{0}.conv1.{1}"),
    (r"compensation\.blocks\.(\d+)\.conv_b\.(\w+)", "warpnet.conv{0}.conv2.{1}"),
    (r"compensation\.tail\.(\w+)", "warpnet.conv6.{0}"),
    (r"residual_encoder\.convs\.(\d+)\.(\w+)", "resEncoder.conv{0+}.{1}"),
    (r"residual_encoder\.gdns\.(\d+)\.(\w+)", "resEncoder.gdn{0+}.{1}"),
    (r"residual_decoder\.convs\.(\d+)\.(\w+)", "resDecoder.deconv{0+}.{1}"),
    (r"residual_decoder\.gdns\.(\d+)\.(\w+)", "resDecoder.igdn{0+}.{1}"),
    (r"hyper_encoder\.convs\.(\d+)\.(\w+)", "respriorEncoder.conv{0+}.{1}"),
    (r"hyper_decoder\.convs\.(\d+)\.(\w+)", "respriorDecoder.deconv{0+}.{1}"),
    (r"(z|mv)_prior\.(hs|bs|as_)\.(\d+)", "bitEstimator_{0}.f{2+}.{1p}"),
]


def ours_to_public(key: str) -> str:
    """The public DVC name of one of our keys (for messages); the key itself when no rule covers it."""
    for pattern, template in _INVERSE:
        match = re.fullmatch(pattern, key)
        if match:
            g = match.groups()
            out = template
            for i, value in enumerate(g):
                out = out.replace(f"{{{i}+}}", str(int(value) + 1) if value.isdigit() else value)
                out = out.replace(f"{{{i}p}}", {"hs": "h", "bs": "b", "as_": "a"}.get(value, value))
                out = out.replace(f"{{{i}}}", value)
            return out
    return key


def convert_state_dict(state: Any, source: str) -> dict[str, torch.Tensor]:
    """Rename a public DVC state dict to ours and check it against the paper-size network."""
    if not isinstance(state, dict) or not state:
        raise InputError(f"{source}: expected a DVC state dict (a mapping of names to tensors)")
    for wrapper in ("state_dict", "model"):
        if wrapper in state and isinstance(state[wrapper], dict) and len(state) <= 4:
            state = state[wrapper]
    renamed: dict[str, torch.Tensor] = {}
    public_name: dict[str, str] = {}
    for key, value in state.items():
        bare = key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key
        ours = public_to_ours(bare) if isinstance(bare, str) else None
        if ours is None:
            raise InputError(f"{source} does not match the DVC layout: unexpected key {key!r}")
        renamed[ours] = value
        public_name[ours] = bare
    expected = DvcNet(PRESETS["paper"]).state_dict()
    try:
        check_state_dict(expected, renamed, source)
    except InputError as exc:  # name the key as the public layout spells it
        message = str(exc)
        for ours in expected:
            if repr(ours) in message:
                message = message.replace(repr(ours), repr(public_name.get(ours) or ours_to_public(ours)))
                break
        raise InputError(message) from None
    return {k: v.to(torch.float32) for k, v in renamed.items()}


def convert_file(path: str | os.PathLike, lam: float | None) -> dict:
    """A checkpoint record (ours) from a public DVC file."""
    state = load_file(path, "DVC state dict")
    weights = convert_state_dict(state, str(path))
    return make_record("dvc", PRESETS["paper"].to_json(), weights, lam=lam, steps=0, data=[],
                       source=f"converted from the PyTorch DVC layout: {os.path.basename(str(path))}")
