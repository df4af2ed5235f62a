"""DVC (Lu et al., CVPR 2019) as a codec with a real bitstream: networks, coding, training, conversion."""
