"""The after-step rule keeps the schedule the trainer had before it: the same evaluations (logged with the same
epoch), the same checkpoints, the same end, over a grid of epochs, --max-steps, --eval-every, --save-steps and
early stopping; and a checkpoint's progress reads back whole. No model runs here."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from softprompt.training.distributed import DataParallel
from softprompt.training.run_folder import RunFolder
from softprompt.training.schedule import Plan, Progress
from softprompt.training.train import Trainer
from softprompt.training.train_config import TrainConfig

# The progress dict the trainer wrote into every checkpoint before Progress existed.
OLD_PROGRESS = {"config": {"seed": 1}, "step": 7, "epoch": 1, "batch": 2, "best": 0.5, "bad_evals": 1,
                "window_loss": 3.25, "window_tokens": 12, "logged": 2}  # fmt: skip


def old_schedule(epoch_steps, total, eval_every, save_steps, stop_after, start=(0, 0, 0)) -> list[tuple]:
    """The loop of Trainer.run before the after-step rule (a26e8ce), transcribed with its events recorded."""
    step, epoch, batch = start
    events, evals = [], 0

    def evaluate() -> bool:
        nonlocal evals
        events.append(("eval", step, epoch))
        evals += 1
        return stop_after is not None and evals >= stop_after

    def save() -> None:
        events.append(("save", step, epoch, batch))

    stop = step >= total
    while not stop:
        for index in range(batch, epoch_steps):
            step += 1
            batch = index + 1
            done = step >= total
            if eval_every and step % eval_every == 0:
                stop = evaluate()
            if save_steps and step % save_steps == 0:
                save()
            if done or stop:
                stop = True
                break
        if batch == epoch_steps:
            epoch += 1
            batch = 0
            if not eval_every:
                stop = evaluate() or stop
            save()
        elif step >= total:
            if not (eval_every and step % eval_every == 0):
                evaluate()
            if not (save_steps and step % save_steps == 0):
                save()
    return events


def new_schedule(tmp_path, epoch_steps, total, eval_every, save_steps, stop_after, start=(0, 0, 0)) -> list[tuple]:
    """Trainer.run itself, its step, evaluation, checkpoint and finish replaced by recorders."""
    config = TrainConfig(train="rows.csv", batch_size=1, eval_every=eval_every, save_steps=save_steps, progress=False)
    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.encoded = config, [([1], [2])] * epoch_steps
    trainer.plan = Plan(epoch_steps, total, eval_every, save_steps)
    trainer.progress = progress = Progress(config={}, step=start[0], epoch=start[1], batch=start[2])
    trainer.folder, trainer.parallel = RunFolder(tmp_path), DataParallel()
    events = []

    def evaluate(epoch: int) -> bool:
        events.append(("eval", progress.step, epoch))
        return stop_after is not None and sum(e[0] == "eval" for e in events) >= stop_after

    trainer._train_step = lambda items: iter(())
    trainer._evaluate = evaluate
    trainer._checkpoint = lambda: events.append(("save", progress.step, progress.epoch, progress.batch))
    trainer._finish = lambda: None
    for _ in trainer.steps():
        pass
    return events


def on_disk(events: list[tuple]) -> list[tuple]:
    """Per step, its evaluation then the checkpoint that stayed on disk. The old loop saved an epoch's last step
    twice when --save-steps hit it (before the epoch closed and after: the second replaced the first), and saved a
    --max-steps end that --save-steps hit before its evaluation, so that checkpoint missed the evaluation's record
    and a resumed run dropped it; the rule always evaluates first."""
    steps = dict.fromkeys(e[1] for e in events)
    evals = [[e for e in events if e[0] == "eval" and e[1] == step] for step in steps]
    saves = [[e for e in events if e[0] == "save" and e[1] == step][-1:] for step in steps]
    return [e for at_step in zip(evals, saves) for group in at_step for e in group]


def test_the_after_step_rule_keeps_the_old_schedule(tmp_path):
    grid = itertools.product(range(1, 5), range(1, 4), (0, 1, 3, 5, 7, 20), (0, 1, 2, 3), (0, 1, 2), (None, 1, 2))
    for epoch_steps, epochs, max_steps, eval_every, save_steps, stop_after in grid:
        case = (epoch_steps, max_steps or epoch_steps * epochs, eval_every, save_steps, stop_after)
        assert new_schedule(tmp_path, *case) == on_disk(old_schedule(*case)), case


@pytest.mark.parametrize("eval_every", [0, 2, 3])
def test_an_old_checkpoint_saved_before_its_epoch_closed_resumes_as_before(tmp_path, eval_every):
    """The old loop saved an epoch's last step (--save-steps) before closing the epoch; resumed from there, the
    new loop owes what the old one did: the epoch's close, not the step's own evaluation again."""
    for save_steps, stop_after in itertools.product((1, 3), (None, 1)):
        case = (3, 9, eval_every, save_steps, stop_after)
        start = (6, 1, 3)  # step 6 done, epoch 1 (0-based: the second) not yet closed
        assert new_schedule(tmp_path, *case, start=start) == on_disk(old_schedule(*case, start=start)), case


def test_progress_reads_the_old_checkpoint_keys_and_writes_them_back():
    """An old checkpoint's keys are read and written back as they were; keys added since (the training time)
    start from their defaults."""
    progress = Progress.from_json(OLD_PROGRESS)
    assert (progress.step, progress.epoch, progress.batch, progress.best) == (7, 1, 2, 0.5)
    assert progress.to_json() == {**OLD_PROGRESS, "seconds": 0.0}
    assert dataclasses.replace(progress, logged=3).to_json().keys() == {*OLD_PROGRESS, "seconds"}
