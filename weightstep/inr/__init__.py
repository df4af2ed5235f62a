"""Anchor networks (SIREN, Fourier-feature MLP, DIP-style conv net) and the one fitting loop."""

from weightstep.inr.build import KINDS, NetworkSpec, build_network
from weightstep.inr.dip import DipNet, dip_noise
from weightstep.inr.fit import FitConfig, FitReport, HistoryPoint, StepOutput, fit, fit_image, lr_factor
from weightstep.inr.fourier import FourierMLP, fourier_matrix
from weightstep.inr.losses import psnr_from_mse, reconstruction_loss
from weightstep.inr.siren import Siren, coordinate_grid

__all__ = [
    "KINDS", "DipNet", "FitConfig", "FitReport", "FourierMLP", "HistoryPoint", "NetworkSpec", "Siren",
    "StepOutput", "build_network", "coordinate_grid", "dip_noise", "fit", "fit_image", "fourier_matrix",
    "lr_factor", "psnr_from_mse", "reconstruction_loss",
]
