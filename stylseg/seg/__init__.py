"""Segmentation: models (U-Net, U-Net++, PraNet), PraNet's structure loss, training with exact
resume and prediction to 8-bit probability maps. Algorithm 2, which trains these models on a run's arms, is the
study's (:mod:`stylseg.study`).

Public API::

    create_segmenter, load_segmenter, SEGMENTERS, PraNet   # stylseg.seg.models
    structure_loss, dice_score                             # stylseg.seg.losses
    train_segmenter                                        # stylseg.seg.train
    predict_folder                                         # stylseg.seg.predict
"""

from .losses import dice_score, structure_loss
from .models import SEGMENTERS, PraNet, count_parameters, create_segmenter, load_segmenter
from .predict import predict_folder
from .train import train_segmenter

__all__ = ["SEGMENTERS", "PraNet", "count_parameters", "create_segmenter", "dice_score",
           "load_segmenter", "predict_folder", "structure_loss", "train_segmenter"]
