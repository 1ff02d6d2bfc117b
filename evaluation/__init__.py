"""Comparing the embedders: retrieval metrics, one evaluation run, and its report.
May import `catalog` and `vectorstore`, never `assistant`."""
from evaluation.metrics import (
                                LABEL_LEVELS,
                                QueryOutcome,
                                Scores,
                                average_precision_at_k,
                                hit_at_k,
                                precision_at_k,
                                score,
                                worst_article_types,
)
from evaluation.runner import Evaluation, EvaluationSettings, run_evaluation

__all__ = ["LABEL_LEVELS", "QueryOutcome", "Scores", "average_precision_at_k", "hit_at_k", "precision_at_k",
           "score", "worst_article_types", "Evaluation", "EvaluationSettings", "run_evaluation"]
