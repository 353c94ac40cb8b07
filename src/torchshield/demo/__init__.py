"""The end-to-end demo (`torchshield demo`): the whole life of a model on generated data."""

from torchshield.demo.pipeline import STEPS, run_demo
from torchshield.demo.state import DemoState, StepResult, StepSkipped

__all__ = ["DemoState", "STEPS", "StepResult", "StepSkipped", "run_demo"]
