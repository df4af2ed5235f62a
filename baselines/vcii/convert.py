"""Converting the VCII PyTorch release's weights onto our modules.

That release saves each model as four state dicts, ``{name}_{encoder|binarizer|decoder|unet}_{iter:08d}.pth``,
and trains one model per hierarchy level (``train.sh 0|1|2``: distances 6+6 with 16 bits and
fuse levels 1/1, 3+3 with 16 bits and 2/3, 1+2 with 8 bits and 1/1). Give the three encoder
files (levels 0, 1, 2); the other three files of each are found beside it. Every key is
renamed by the rules below and must fit the paper-size network exactly: the first missing,
unexpected or differently shaped key (named as the release spells it) refuses the files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from baselines.neuralvc.checkpoint import check_state_dict, load_file, make_record
from baselines.vcii.model import PRESETS, VciiNet
from weightstep.errors import InputError

PARTS = ("encoder", "binarizer", "decoder", "unet")
# (public pattern, our template); the first group of every pattern with a layer number counts from 1 in the
# release and from 0 here.
_RULES = {
    "encoder": [(r"conv\.weight", "encoder.stem.weight"),
                (r"rnn([1-3])\.conv_ih\.weight", "encoder.cells.{0}.input_conv.weight"),
                (r"rnn([1-3])\.conv_hh\.weight", "encoder.cells.{0}.hidden_conv.weight")],
    "binarizer": [(r"conv\.weight", "binarizer.project.weight")],
    "decoder": [(r"conv1\.weight", "decoder.stem.weight"), (r"conv2\.weight", "decoder.head.weight"),
                (r"rnn([1-4])\.conv_ih\.weight", "decoder.cells.{0}.input_conv.weight"),
                (r"rnn([1-4])\.conv_hh\.weight", "decoder.cells.{0}.hidden_conv.weight")],
    "unet": [(r"inc\.conv\.conv\.()(\d)\.(\w+)", "context.inc.{1}.{2}"),
             (r"down([1-4])\.mpconv\.1\.conv\.(\d)\.(\w+)", "context.downs.{0}.{1}.{2}"),
             (r"up([1-4])\.conv\.conv\.(\d)\.(\w+)", "context.ups.{0}.{1}.{2}")],
}


def _rename(part: str, key: str) -> str | None:
    for pattern, template in _RULES[part]:
        match = re.fullmatch(pattern, key)
        if match:
            groups = list(match.groups())
            if groups and groups[0]:
                groups[0] = str(int(groups[0]) - 1)
            return template.format(*groups)
    return None


def sibling_files(encoder_path: str) -> dict[str, Path]:
    """The four files of one model from its encoder file's name."""
    path = Path(encoder_path)
    if "_encoder_" not in path.name:
        raise InputError(f"{path}: expected a VCII encoder file named NAME_encoder_ITER.pth")
    return {part: path.with_name(path.name.replace("_encoder_", f"_{part}_")) for part in PARTS}


def convert_level(level: int, encoder_path: str, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed, public = {}, {}
    for part, path in sibling_files(encoder_path).items():
        state = load_file(path, f"VCII {part} state dict")
        if not isinstance(state, dict):
            raise InputError(f"{path}: expected a state dict")
        for key, value in state.items():
            bare = key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key
            ours = _rename(part, bare) if isinstance(bare, str) else None
            if ours is None:
                raise InputError(f"{path} does not match the VCII layout: unexpected key {key!r}")
            renamed[f"levels.{level}.{ours}"] = value
            public[f"levels.{level}.{ours}"] = f"{path.name}:{bare}"
    mine = {k: v for k, v in expected.items() if k.startswith(f"levels.{level}.")}
    try:
        check_state_dict(mine, renamed, f"VCII level {level} ({Path(encoder_path).name})")
    except InputError as exc:
        message = str(exc)
        for ours in mine:
            if repr(ours) in message:
                message = message.replace(repr(ours), repr(public.get(ours, ours)))
                break
        raise InputError(message) from None
    return renamed


def convert_files(encoder_paths: list[str], lam: float | None = None) -> dict:
    if len(encoder_paths) != 3:
        raise InputError(f"convert vcii takes the three encoder files of hierarchy levels 0, 1, 2; got {len(encoder_paths)}")
    expected = VciiNet(PRESETS["paper"]).state_dict()
    weights: dict[str, torch.Tensor] = {}
    for level, path in enumerate(encoder_paths):
        weights.update(convert_level(level, path, expected))
    names = ", ".join(os.path.basename(p) for p in encoder_paths)
    return make_record("vcii", PRESETS["paper"].to_json(), weights, lam=lam, steps=0, data=[],
                       source=f"converted from the VCII PyTorch release: {names}")
