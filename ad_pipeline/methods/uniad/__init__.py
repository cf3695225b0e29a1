"""UniAD: one feature-reconstruction transformer for all categories (You et al., NeurIPS 2022).

``train_unified`` trains one model over every category (single process or under torchrun/DDP,
resumable); ``score_uniad`` scores one category with it. ``UniAD`` wraps both behind the
per-category ``AnomalyMethod`` interface.
"""

from ad_pipeline.methods.uniad.config import Config, DistributedConfig
from ad_pipeline.methods.uniad.launch import is_main_process, relaunch_under_torchrun, torchrun_command, under_torchrun
from ad_pipeline.methods.uniad.method import UniAD, load_model_state, save_model_state
from ad_pipeline.methods.uniad.model import UniADReconstructor, anomaly_map, image_scores, neighbour_mask
from ad_pipeline.methods.uniad.score import score_features, score_uniad
from ad_pipeline.methods.uniad.train import TrainResult, train_unified

__all__ = [
    "Config", "DistributedConfig", "TrainResult", "UniAD", "UniADReconstructor", "anomaly_map", "image_scores",
    "is_main_process", "load_model_state", "neighbour_mask", "relaunch_under_torchrun", "save_model_state",
    "score_features", "score_uniad", "torchrun_command", "train_unified", "under_torchrun",
]
