"""``Trainer`` subclasses of hf-compress and their ``TrainingArguments``."""

from .vtrans_config import LoRARecoveryArguments, VTransTrainingArguments
from .vtrans_trainer import PrunedModelTrainer, VTransTrainer

__all__ = ["LoRARecoveryArguments", "PrunedModelTrainer", "VTransTrainer", "VTransTrainingArguments"]
