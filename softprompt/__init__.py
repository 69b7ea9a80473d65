"""softprompt: prompt tuning (Lester et al. 2021) for frozen Hugging Face language models."""

from .causal import PromptedCausalLM
from .errors import SoftpromptError
from .models import load_base
from .prompt import SoftPrompt, init_prompt
from .prompted import PromptedModel, ScoringMode
from .seq2seq import PromptedSeq2SeqLM
from .tasks import Task, read_rows
from .train import TrainConfig, fit
from .tuned import TunedPrompt

__all__ = [
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
