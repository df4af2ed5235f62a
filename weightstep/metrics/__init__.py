"""Quality and rate metrics: per-frame PSNR (RGB, YUV 4:2:0), MS-SSIM, bpp and Bjøntegaard deltas.

Clip values are means over frames of per-frame values; per-frame PSNR is capped at
PSNR_CAP_DB (100 dB) so identical frames stay finite.
"""

from weightstep.metrics.bdrate import bd_psnr, bd_quality, bd_rate
from weightstep.metrics.msssim import ms_ssim_rgb, ms_ssim_setup
from weightstep.metrics.psnr import PSNR_CAP_DB, psnr_rgb, psnr_yuv
from weightstep.metrics.quality import QualityReport, bpp, measure

__all__ = ["PSNR_CAP_DB", "QualityReport", "bd_psnr", "bd_quality", "bd_rate", "bpp", "measure",
           "ms_ssim_rgb", "ms_ssim_setup", "psnr_rgb", "psnr_yuv"]
