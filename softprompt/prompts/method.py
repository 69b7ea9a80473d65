"""What a folder's prompt is the result of: prompt tuning, prompt design or model tuning, as one typed value.

Each method says what it trains (a prompt of a few KB, every weight of the model, or nothing), so how its
folder is saved and loaded (a PEFT prompt folder, or a Hugging Face model folder), how a run scores while it
trains, its optimiser's default learning rates, and what its model card says. Code asks these questions of
the method; no code compares a method's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.prompted import PromptedModel, ScoringMode
from ..utils.errors import ParameterError


@dataclass(frozen=True)
class Method:
    name: str
    card: str  # the model card's opening words
    trains_prompt: bool  # a soft prompt on a frozen base
    trains_model: bool  # every weight: the folder is a Hugging Face model folder, behind a prompt of no tokens
    lr: dict[str, float] = field(default_factory=dict)  # the default learning rate of each optimiser

    @property
    def trains(self) -> bool:
        return self.trains_prompt or self.trains_model

    def trained_tensors(self, lm: PromptedModel) -> dict[str, torch.Tensor]:
        """The tensors the optimizer updates, by the names checkpoints store them under."""
        if self.trains_model:
            return {f"model.{name}": param for name, param in lm.model.named_parameters()}
        return {"prompt": lm.prompt.embedding} if self.trains_prompt else {}

    def training_mode(self, gradient_checkpointing: bool) -> ScoringMode:
        """How a run of this method scores: the reference mode where no keys/values may be kept (the weights
        change at every step; checkpointing turns the cache off), else packed."""
        return ScoringMode.REFERENCE if self.trains_model or gradient_checkpointing else ScoringMode.PACKED


PROMPT_TUNING = Method(
    "prompt-tuning",
    "A soft prompt trained in front of the frozen model (prompt tuning, Lester et al. 2021)",
    trains_prompt=True,
    trains_model=False,
    lr={"adamw": 3e-2, "adafactor": 0.3},
)
MODEL_TUNING = Method(
    "model-tuning",
    "Every weight of the model trained (model tuning)",
    trains_prompt=False,
    trains_model=True,
    lr={"adamw": 3e-5, "adafactor": 1e-3},  # a whole model takes a thousand times smaller steps
)
PROMPT_DESIGN = Method(
    "prompt-design",
    "A few-shot prompt (training examples written out in front of each input), not trained",
    trains_prompt=False,
    trains_model=False,
)
METHODS = {method.name: method for method in (PROMPT_TUNING, MODEL_TUNING, PROMPT_DESIGN)}
TRAINED = tuple(name for name, method in METHODS.items() if method.trains)  # what `train --method` takes


def method_named(name: str, parameter: str = "method") -> Method:
    """The method of this name, or a one-line error naming `parameter` and the choices."""
    if name not in METHODS:
        raise ParameterError.not_one_of(parameter, name, tuple(METHODS))
    return METHODS[name]
