"""The latent-grid anchor, its latent coding, the compact tensor layout and per-tensor steps."""

import dataclasses

import numpy as np
import pytest
import torch

from weightstep import registry
from weightstep.codecs import harness
from weightstep.codecs.latentcoding import decode_latents, encode_latents, latent_bits
from weightstep.codecs.weightstep_config import WeightStepConfig
from weightstep.coding.container import Container
from weightstep.coding.latents import ChunkDecoder, encode_chunks, ideal_bits
from weightstep.coding.quantise import pack_tensors, quantise
from weightstep.coding.stepsearch import quantise_snapped, search_steps
from weightstep.coding.tensorpack import pack_network, snap_steps, unpack_network
from weightstep.errors import BitstreamError
from weightstep.inr import NetworkSpec, build_network, latent_names
from weightstep.inr.latent_context import checkerboard, laplace_bits
from weightstep.video import Video

GRID = {"inr": "grid", "grid_levels": "4", "grid_hidden": "8", "anchor_steps": "150", "lambda": "1e-5",
        "device": "cpu"}


def textured_frame(size=32):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([0.5 + 0.3 * np.sin(9 * xx) * np.cos(5 * yy), 0.3 + 0.4 * yy, 0.7 - 0.5 * xx * yy])
    return Video(identity="test:texture", fps=25.0, rgb_frames=rgb[None].astype(np.float32))


@pytest.fixture(scope="module")
def coded():
    frame = textured_frame()
    codec = registry.create("weightstep", GRID)
    result = harness.run(codec, frame)
    return frame, codec, codec.encode(frame).data, result


def test_grid_anchor_round_trips_bit_exactly_and_learns(coded):
    frame, codec, data, result = coded
    decoded = harness.decode_bytes(data)[1]
    assert np.array_equal(decoded.rgb(), codec.reconstruction.numpy())
    anchor = result.extra["anchor"]
    assert anchor["latents"] == 32 * 32 + 16 * 16 + 8 * 8 + 4 * 4
    # written latent bits against their information content under the stored context model: 1 %, plus
    # the 8-byte support header, the coder's last word, and constriction's leaky quantised Laplace
    # (every symbol of the support keeps a minimum probability: about 0.01 bit a symbol when the
    # latents are nearly all zero, as in this 74-byte case: 80 bytes of words)
    assert anchor["latent_bytes"] <= 1.01 * anchor["latent_ideal_bytes"] + 8 + 4 + 0.02 * anchor["latents"] / 8
    mean_colour = 10 * np.log10(1.0 / np.mean((frame.rgb() - frame.rgb().mean(axis=(2, 3), keepdims=True)) ** 2))
    assert result.psnr_rgb > mean_colour + 5  # measured 24.1 dB against 17.9 dB (a 10 s fit of a 32x32 frame)


def test_decoder_refuses_a_grid_stream_whose_shapes_disagree_with_its_config(coded):
    _, _, data, _ = coded
    container = Container.from_bytes(data)
    for change in ({"grid_levels": 3}, {"grid_hidden": 4}, {"grid_context_hidden": 2}):
        header = {**container.header, "config": {**container.header["config"], **change}}
        forged = Container(codec=container.codec, header=header, sections=container.sections).to_bytes()
        with pytest.raises(BitstreamError):
            harness.decode_bytes(forged)


def test_damaged_grid_sections_are_refused(coded):
    _, codec, data, _ = coded
    container = Container.from_bytes(data)
    section = container.sections[0][1]
    rng = np.random.default_rng(3)
    refused = 0
    for cut in sorted(set(rng.integers(1, len(section) - 1, 30).tolist())):
        forged = Container(codec=container.codec, header=container.header,
                           sections=[(container.sections[0][0], section[:cut])]).to_bytes()
        with pytest.raises(BitstreamError):
            harness.decode_bytes(forged)
        refused += 1
    assert refused > 10


def test_latent_coding_round_trips_and_matches_its_information_content():
    torch.manual_seed(0)
    net = build_network(NetworkSpec("grid", grid_levels=3, grid_context_hidden=4), 24, 40)
    with torch.no_grad():
        for p in net.context.parameters():
            p.add_(0.3 * torch.randn_like(p))
        weights = {name: p.detach().clone() for name, p in net.named_parameters()}
        for name in latent_names(net):
            weights[name] = torch.round(3 * torch.randn_like(weights[name]))
    blob = encode_latents(net, weights)
    decoded = decode_latents(net, weights, blob)
    for name in latent_names(net):
        assert torch.equal(decoded[name], weights[name])
    ideal = latent_bits(net, weights)
    assert 8 * (len(blob) - 8) <= 1.01 * ideal + 32
    with pytest.raises(BitstreamError):
        decode_latents(net, weights, blob + b"\0\0\0\1")


def test_training_bits_agree_with_the_coded_model_on_integers():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.0, 1.0, 2.0, 7.0])
    mu, scale = torch.full_like(x, 0.25), torch.full_like(x, 1.5)
    torch_bits = float(laplace_bits(x, mu, scale).sum())
    numpy_bits = ideal_bits(x.numpy(), mu.numpy(), scale.numpy(), -100, 100)
    assert torch_bits == pytest.approx(numpy_bits, rel=1e-4)


@pytest.mark.parametrize(("levels", "height", "width"), [(5, 37, 50), (1, 6, 5), (3, 1, 9)])
def test_batched_training_bits_are_the_coding_orders_per_level_model(levels, height, width):
    """The training path gathers every level's contexts at once; the coder evaluates level by level,
    pass by pass (:func:`coding_plan`). On odd sizes (ragged coarser levels, a single level, a single
    row) both give the same bits and gradients, so what the fit minimises is what the file will cost."""
    spec = NetworkSpec(kind="grid", grid_levels=levels, grid_hidden=4, grid_context_hidden=6, seed=2)
    net = build_network(spec, height, width)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.context.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=generator))
        for grid in net.latents:
            grid.copy_(torch.round(2.0 * torch.randn(grid.shape, generator=generator)))
    latents = list(net.latents)
    reference = latents[0].new_zeros(())
    for level, values in enumerate(latents):
        coarser = latents[level + 1] if level + 1 < len(latents) else None
        mask = checkerboard(*values.shape[-2:])
        mu_a, s_a = net.context.level_params(level, values, coarser, "a")
        mu_b, s_b = net.context.level_params(level, values, coarser, "b")
        reference = reference + laplace_bits(values[0, 0], torch.where(mask, mu_a, mu_b),
                                             torch.where(mask, s_a, s_b)).sum()
    reference.backward()
    expected = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    batched = net.context(latents)
    batched.backward()
    assert float(batched.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for name, grad in expected.items():
        got = dict(net.named_parameters())[name].grad
        assert torch.allclose(got, grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max())), name


def test_chunk_decoder_pops_chunks_in_order():
    rng = np.random.default_rng(1)
    chunks = [(rng.integers(-5, 6, n), rng.normal(0, 1, n).round(2), rng.uniform(0.5, 3, n)) for n in (7, 1, 30)]
    decoder = ChunkDecoder(encode_chunks(chunks))
    for symbols, mu, scale in chunks:
        assert np.array_equal(decoder.decode(mu, scale), symbols)
    decoder.finish()


def test_compact_layout_round_trips_and_old_layout_still_decodes():
    rng = np.random.default_rng(2)
    tensors = {"w": torch.from_numpy(rng.normal(0, 0.1, (6, 5)).astype(np.float32)),
               "b": torch.from_numpy(rng.normal(0.5, 0.01, 6).astype(np.float32))}
    expected = [(name, tuple(t.shape)) for name, t in tensors.items()]
    compact = [quantise_snapped(t, 2**-4, True, name) for name, t in tensors.items()]
    back = unpack_network(pack_network(compact), expected)
    assert all(a == b for a, b in zip(back, compact, strict=True))
    old = [quantise(t, 2**-4, True, name=name) for name, t in tensors.items()]  # float32 steps, per-tensor layout
    assert all(a == b for a, b in zip(unpack_network(pack_tensors(old), expected), old, strict=True))
    assert len(pack_network(compact)) < len(pack_tensors(old))
    with pytest.raises(ValueError):
        pack_network(old)  # steps off the 2^(k/8) grid cannot be stored exactly
    with pytest.raises(BitstreamError):
        unpack_network(pack_network(compact), expected[:1])
    assert np.array_equal(snap_steps(snap_steps(np.array([0.3, 1e-3]))), snap_steps(np.array([0.3, 1e-3])))


def test_per_tensor_steps_never_cost_more_than_the_shared_step():
    torch.manual_seed(0)
    params = {"a": torch.randn(40, 30) * 0.1, "b": torch.randn(40) * 2.0, "c": torch.randn(3, 40) * 0.01}
    importance = {"a": 100.0, "b": 1e-4, "c": 1e4}  # relative errors in c matter most, in b hardly at all

    def distortion(q):
        return float(sum(importance[k] * torch.mean((q[k] - params[k]) ** 2) for k in params))

    _, shared = search_steps(params, distortion, 1e-5, per_channel=False, sweeps=0)
    quantised, refined = search_steps(params, distortion, 1e-5, per_channel=False, sweeps=2)
    assert refined.cost <= shared.cost
    assert refined.rel_steps["b"] > refined.rel_steps["c"]  # coarse where it does not matter
    assert refined.bits == 8 * len(pack_network(list(quantised.values())))


def test_quantisation_fine_tune_uses_the_network_kind_lr_and_the_codec_seed():
    # regression: it used the SIREN rate and seed 0 for every network kind
    for kind, lr in (("fourier", 1e-2), ("dip", 5e-3), ("siren", 1e-3)):
        settings = WeightStepConfig(inr=kind, seed=7).anchor_settings(fit_first=False)
        assert settings.fit is None and settings.qat_lr == pytest.approx(0.1 * lr) and settings.seed == 7
    assert dataclasses.replace(WeightStepConfig(), anchor_lr=0.5).anchor_settings(True).qat_lr == pytest.approx(0.05)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_fitting_upsamples_by_matrices_to_the_kernels_function(mode):
    """Autograd on: A_h @ level @ A_w^T; off (coded renders, the decoder): torch's kernel, or the same
    matrices where the stream's format says so. Same function."""
    spec = NetworkSpec(kind="grid", grid_levels=5, grid_hidden=4, grid_upsample=mode, seed=3)
    net = build_network(spec, 37, 50)  # odd sizes: the crop after each level's upsampling matters
    generator = torch.Generator().manual_seed(0)
    for grid in net.latents:
        grid.data = torch.randn(grid.shape, generator=generator)
    with torch.no_grad():
        kernel = net.upsampled(list(net.latents))
    fitted = net.upsampled(list(net.latents))
    assert fitted.requires_grad and fitted.shape == kernel.shape == (1, 5, 37, 50)
    assert torch.allclose(fitted, kernel, atol=1e-5) and not torch.equal(fitted, kernel)
    fitted.square().sum().backward()
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in net.latents)
    net.matrix_render = True  # stream format 3: coded renders and the decoder take the matrices too
    with torch.no_grad():
        rendered = net.upsampled(list(net.latents))
    assert torch.equal(rendered, fitted.detach())


def test_per_channel_steps_are_kept_only_where_they_pay():
    torch.manual_seed(0)
    # "even": 12 channels of one spread (a step each buys nothing); "uneven": channel spreads 1e-3..10
    params = {"even": torch.randn(12, 20) * 0.1,
              "uneven": torch.randn(12, 20) * torch.logspace(-3, 1, 12)[:, None],
              "bias": torch.randn(12)}

    def distortion(q):  # relative error of every channel counts: a shared step wipes out the small ones
        return float(sum(torch.mean(((q[k] - params[k]) / params[k].std(dim=-1, keepdim=True)) ** 2)
                         for k in params))

    quantised, report = search_steps(params, distortion, 1e-4, per_channel=True)
    assert set(report.per_channel) == {"uneven"}
    assert quantised["uneven"].per_channel and not quantised["even"].per_channel
    assert report.bits == 8 * len(pack_network(list(quantised.values())))
    _, forced = search_steps(params, distortion, 1e-4, per_channel=False)
    assert forced.per_channel == () and report.cost <= forced.cost


def test_the_synthesis_fits_through_matrix_products_the_function_it_renders():
    net = build_network(NetworkSpec(kind="grid", grid_levels=4, grid_hidden=8), 20, 28)
    with torch.no_grad():
        for conv in (net.synthesis.refine,):
            conv.weight.normal_(0.0, 0.2)
    features = torch.randn(1, 4, 20, 28, requires_grad=True)
    fitted = net.synthesis(features)  # grad enabled: the fitting path
    with torch.no_grad():
        rendered = net.synthesis(features)  # the convolutions coded renders and decoders use
    torch.testing.assert_close(fitted.detach(), rendered, rtol=0, atol=1e-5)
    fitted.square().sum().backward()
    assert features.grad is not None and net.synthesis.mix.weight.grad.abs().sum() > 0
