"""``Trainer`` subclasses of hf-compress and their ``TrainingArguments``."""

from .vtrans_config import VTransTrainingArguments
from .vtrans_trainer import PrunedModelTrainer, VTransTrainer

__all__ = ["PrunedModelTrainer", "VTransTrainer", "VTransTrainingArguments"]
