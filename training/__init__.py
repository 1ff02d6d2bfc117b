"""Fine-tuning the embedders on a catalog's own labels. May import `catalog` and
`vectorstore` only; app.py wires it to the command line (`python app.py finetune`)."""
from training.checkpoint import CheckpointMismatch
from training.settings import FinetuneSettings
from training.trainer import FinetuneResult, finetune
from training.validate import ValidationScores

__all__ = ["CheckpointMismatch", "FinetuneSettings", "FinetuneResult", "finetune", "ValidationScores"]
