"""VCII (Wu et al., ECCV 2018, "Video Compression through Image Interpolation") with a real bitstream."""
