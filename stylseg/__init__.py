"""stylseg: structure-aware stylized image synthesis for robust medical image segmentation.

A reproducibility kit for Bao et al., "Structure-Aware Stylized Image Synthesis for Robust
Medical Image Segmentation" (arXiv 2412.04296), built on OSASIS (Cho et al., CVPR 2024),
Diffusion Autoencoders (Preechakul et al., CVPR 2022) and PraNet (Fan et al., MICCAI 2020).
"""

from .utils import StylsegError, __version__  # noqa: E402,F401
