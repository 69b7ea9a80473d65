"""softprompt: prompt tuning (Lester et al. 2021) for frozen Hugging Face language models."""

from .data.tasks import Task, read_rows
from .engine.causal import PromptedCausalLM
from .engine.prompted import PromptedModel, ScoringMode
from .engine.seq2seq import PromptedSeq2SeqLM
from .models.base import Base, load_base
from .models.prompt import SoftPrompt, init_prompt
from .prompts.method import Method
from .prompts.record import FolderRecord
from .prompts.tuned import TunedPrompt
from .serve.client import Client
from .training.train import TrainConfig, fit
from .utils.errors import SoftpromptError

__all__ = [
    "Base",
    "Client",
    "FolderRecord",
    "Method",
    "PromptedCausalLM",
    "PromptedModel",
    "PromptedSeq2SeqLM",
    "ScoringMode",
    "SoftPrompt",
    "SoftpromptError",
    "Task",
    "TrainConfig",
    "TunedPrompt",
    "fit",
    "init_prompt",
    "load_base",
    "read_rows",
]
__version__ = "0.1.0"
