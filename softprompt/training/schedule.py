"""Where a training run stands, and the one rule that says what follows each optimizer step.

`Progress` is saved in every checkpoint (as the JSON object `progress`, the same keys the trainer has always
written), so a resumed run continues from the same step, epoch, batch and early-stopping state.
`after_step` decides, from the progress alone, whether to evaluate, checkpoint or stop (nanoGPT's shape):
- evaluate every `eval_every` steps, else at each epoch end, and at a `max_steps` end that falls mid-epoch;
- checkpoint every `save_steps` steps, at each epoch end, and at the last step;
- stop at `total_steps` (early stopping is the evaluation's call).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class Progress:
    """A run's position and running state; `config` is the TrainConfig as a dict, for `--resume DIR`."""

    config: dict
    step: int = 0
    epoch: int = 0  # epochs done
    batch: int = 0  # optimizer steps done in the current epoch
    best: float | None = None  # the best --keep-best value so far
    bad_evals: int = 0  # evaluations since it last improved
    window_loss: float = 0.0  # summed train loss and tokens since the last evaluation
    window_tokens: int = 0
    logged: int = 0  # metrics.jsonl records written so far: a resumed run drops any later ones
    seconds: float = 0.0  # training time up to the last checkpoint, so a resumed run's total counts every part

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Progress:
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls) if field.name in data})


@dataclass(frozen=True)
class Plan:
    """What the config fixes about a run's steps."""

    epoch_steps: int
    total_steps: int
    eval_every: int = 0
    save_steps: int = 0


@dataclass(frozen=True)
class Due:
    """What follows a step, in this order: close the epoch, evaluate (logged under `log_epoch`), checkpoint."""

    epoch_end: bool
    evaluate: bool
    log_epoch: int
    checkpoint: bool
    stop: bool


def after_step(progress: Progress, plan: Plan, close_only: bool = False) -> Due:
    """The rule, applied to the progress of a step just taken (`batch` counts it, the epoch is not yet closed).
    With `close_only`, the step's own evaluation was made before a checkpoint saved between an epoch's last
    step and its close (older releases saved there): only the epoch's close is owed.

    An every-N-steps evaluation is logged with the epoch it ran in, a per-epoch one with the epochs done."""
    epoch_end = progress.batch >= plan.epoch_steps
    stop = progress.step >= plan.total_steps
    every = bool(plan.eval_every) and progress.step % plan.eval_every == 0 and not close_only
    evaluate = every or (not plan.eval_every and epoch_end) or (stop and not epoch_end)
    saves = bool(plan.save_steps) and progress.step % plan.save_steps == 0
    log_epoch = progress.epoch + (epoch_end and not plan.eval_every)
    return Due(epoch_end, evaluate, log_epoch, saves or epoch_end or stop, stop)
