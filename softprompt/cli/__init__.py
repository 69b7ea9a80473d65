"""The command line: `softprompt train | design | eval | predict | serve | ensemble | inspect | sweep | compare |
transfer`.

- train: train a soft prompt (flags generated from TrainConfig's fields, or `--resume DIR`);
- design: prompt design, the untrained baseline (K examples in front of each input), as a prompt folder;
- eval: held-out metrics as one JSON line; predict: predictions to CSV or JSONL (offline or via a server);
- serve: many prompts over HTTP on one frozen model;
- ensemble, inspect, sweep, compare, transfer: the paper's toolbox (§6, §7, §3.2, Figure 1, §5).

parser.py builds the parser; commands.py and studies.py run each command through the library. User errors
print one line and exit 2; a library error that names a parameter (`init_text: ...`) is printed with its flag
(`--init-text: ...`).
"""

from __future__ import annotations

import os
import sys
import warnings

from ..utils.errors import ParameterError, SoftpromptError
from .parser import build_parser, flag

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    from .commands import COMMANDS
    from .studies import COMMANDS as STUDIES

    hf_logging.disable_progress_bar()  # our own bar and one-line errors only
    warnings.formatwarning = lambda message, *_: f"softprompt: warning: {message}\n"
    try:
        {**COMMANDS, **STUDIES}[args.command](args)
    except ParameterError as exc:
        print(f"softprompt: error: {exc.spelled(flag)}", file=sys.stderr)
        return 2
    except SoftpromptError as exc:
        print(f"softprompt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("softprompt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    return 0
