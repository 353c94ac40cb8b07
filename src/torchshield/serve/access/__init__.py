"""API keys for the serving layer: creation, authentication, revocation (web-free)."""

from torchshield.serve.access.keys import ApiKey, KeyStore, NewKey, parse_duration, valid_model_name

__all__ = ["ApiKey", "KeyStore", "NewKey", "parse_duration", "valid_model_name"]
