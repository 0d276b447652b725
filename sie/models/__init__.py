"""Cross-encoder architectures sie runs, keyed by the ``architectures`` name in a checkpoint's config."""

from sie.models.bert import BertForSequenceClassification
from sie.models.xlm_roberta import XLMRobertaForSequenceClassification

ARCHITECTURES = {
    "BertForSequenceClassification": BertForSequenceClassification,
    "XLMRobertaForSequenceClassification": XLMRobertaForSequenceClassification,
    "RobertaForSequenceClassification": XLMRobertaForSequenceClassification,
}

__all__ = ["ARCHITECTURES", "BertForSequenceClassification", "XLMRobertaForSequenceClassification"]
