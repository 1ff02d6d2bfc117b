"""Training what the project ships or serves: fine-tuning the embedders on a catalog's own
labels (`app.py finetune`), the garment parser's head (`app.py train-parser`) and the colour
model. May import the layers below the surfaces (catalog, embedding, vectorstore, search) and
the one P@k of `evaluation.metrics` (training validates as evaluation scores),
never `operations`, `assistant` or `shop`."""
from training.checkpoint import CheckpointMismatch
from training.settings import FinetuneSettings
from training.trainer import FinetuneResult, finetune
from training.validate import ValidationScores

__all__ = ["CheckpointMismatch", "FinetuneSettings", "FinetuneResult", "finetune", "ValidationScores"]
