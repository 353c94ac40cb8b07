"""PII detection for Chinese and English text: recognisers, their registry and ``find_pii``."""

from torchshield.data.pii.engine import DEFAULT_MIN_SCORE, find_pii, find_pii_batch, find_pii_dataframe
from torchshield.data.pii.finding import ENTITY_LABELS, ENTITY_TYPES, Finding
from torchshield.data.pii.normalize import NormalizedText, normalize
from torchshield.data.pii.recognizer import FunctionRecognizer, PatternRecognizer, RawMatch, Recognizer
from torchshield.data.pii.registry import RecognizerRegistry, default_registry, get_registry

__all__ = [
    "DEFAULT_MIN_SCORE",
    "ENTITY_LABELS",
    "ENTITY_TYPES",
    "Finding",
    "FunctionRecognizer",
    "NormalizedText",
    "PatternRecognizer",
    "RawMatch",
    "Recognizer",
    "RecognizerRegistry",
    "default_registry",
    "find_pii",
    "find_pii_batch",
    "find_pii_dataframe",
    "get_registry",
    "normalize",
]
