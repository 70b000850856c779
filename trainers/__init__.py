"""``Trainer`` subclasses of hf-compress and their ``TrainingArguments``."""

from .dcanas_config import DCANASTrainingArguments
from .dcanas_trainer import DCANASTrainer
from .ramen_config import RamenTrainingArguments
from .ramen_trainer import RamenTrainer
from .vtrans_config import LoRARecoveryArguments, VTransTrainingArguments
from .vtrans_trainer import PrunedModelTrainer, VTransTrainer

__all__ = [
    "DCANASTrainer", "DCANASTrainingArguments", "LoRARecoveryArguments", "PrunedModelTrainer", "RamenTrainer",
    "RamenTrainingArguments", "VTransTrainer", "VTransTrainingArguments",
]
