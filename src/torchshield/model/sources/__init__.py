"""Model sources: one place that turns what a user has into an ``nn.Module`` and back.

A Hugging Face directory (``config.json`` + safetensors/bin weights, sharded or not, with
tokenizer and image-processor files), an architecture name plus a state dict (torchvision
style, or names registered here), a ``package.module:function`` factory, or torchshield's own
zoo. ``read_source`` reads any of them; a bundle records the reference as JSON and
``build_module`` rebuilds it; ``torchshield.load_model`` does both ends for a ``.tsb``.

``transformers`` is an optional extra: without it, HF directories fail with an error naming
``pip install 'torchshield[hf]'``; everything else works."""

from __future__ import annotations

from torchshield.model.sources.fixes import apply_fixes, batchnorm_to_groupnorm
from torchshield.model.sources.read import ARCH_KINDS, ModelSource, build_module, read_source
from torchshield.model.sources.registry import architectures, register_architecture, unregister_architecture

__all__ = ["ARCH_KINDS", "ModelSource", "apply_fixes", "architectures", "batchnorm_to_groupnorm", "build_module",
           "read_source", "register_architecture", "unregister_architecture"]
