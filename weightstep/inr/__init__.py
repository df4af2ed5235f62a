"""Anchor networks (SIREN, Fourier-feature MLP, DIP-style conv net, latent grids) and the one fitting loop."""

from weightstep.inr.build import KINDS, NetworkSpec, build_network, latent_names
from weightstep.inr.dip import DipNet, dip_noise
from weightstep.inr.fit import FitConfig, FitReport, HistoryPoint, StepOutput, fit, fit_image, lr_factor
from weightstep.inr.fourier import FourierMLP, fourier_matrix
from weightstep.inr.grid import GridNet
from weightstep.inr.losses import psnr_from_mse, reconstruction_loss
from weightstep.inr.siren import Siren, coordinate_grid

__all__ = [
    "KINDS", "DipNet", "GridNet", "FitConfig", "FitReport", "FourierMLP", "HistoryPoint", "NetworkSpec", "Siren",
    "StepOutput", "build_network", "coordinate_grid", "dip_noise", "fit", "fit_image", "fourier_matrix", "latent_names",
    "lr_factor", "psnr_from_mse", "reconstruction_loss",
]
