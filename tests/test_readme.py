"""README.md tells the truth about the command line: every flag it shows exists on that command, and every
choice the parser offers is written in README.md or in that command's --help."""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
from pathlib import Path

from softprompt.cli.parser import build_parser
from softprompt.training.train_config import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"
OTHER_PROGRAMS = {"--gpu-memory-utilization", "--enable-prompt-embeds", "--dtype"}  # vLLM's, where README shows it


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def shown_invocations(text: str) -> list[tuple[str, list[str]]]:
    """(command, flags) of every `softprompt COMMAND ...` line in README's code blocks (continued lines joined)."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            match = re.match(r"(?:\.venv/bin/)?softprompt (\w+)(.*)", line)
            if match:
                words = shlex.split(match.group(2).split(" #")[0], posix=True) if "'" not in line else line.split()
                found.append((match.group(1), [w.split("=")[0] for w in words if w.startswith("--")]))
    return found


def unknown_flags(text: str) -> list[str]:
    commands = _commands()
    wrong = []
    for command, flags in shown_invocations(text):
        if command not in commands:
            wrong.append(f"softprompt {command}: no such command")
            continue
        known = commands[command]._option_string_actions
        wrong += [f"softprompt {command} {flag}" for flag in flags if flag not in known]
    return wrong


def test_every_flag_readme_shows_exists():
    text = README.read_text()
    assert len(shown_invocations(text)) >= 10  # the parse found README's examples
    assert not unknown_flags(text)


def test_every_flag_named_in_the_prose_and_tables_exists_on_some_command():
    known = {flag for command in _commands().values() for flag in command._option_string_actions}
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", README.read_text()))
    assert len(named) > 30 and not named - known - OTHER_PROGRAMS, sorted(named - known)


def test_a_flag_that_does_not_exist_is_caught():
    planted = "```bash\nsoftprompt eval runs/demo --task raft/twitter_complaints --no-such-flag 3\n```\n"
    assert unknown_flags(planted) == ["softprompt eval --no-such-flag"]


def test_every_choice_the_parser_offers_is_written_down():
    """argparse's choices, and TrainConfig's (checked by its validate(), so argparse does not list them)."""
    text = README.read_text()
    missing = []
    train_help = _commands()["train"].format_help()
    for field in dataclasses.fields(TrainConfig):
        for choice in field.metadata["choices"]:
            if choice not in text and choice not in train_help:
                missing.append(f"softprompt train --{field.name.replace('_', '-')} {choice}")
    for name, command in _commands().items():
        helped = command.format_help()
        for action in command._actions:
            for choice in action.choices or ():
                if str(choice) not in text and str(choice) not in helped:
                    missing.append(f"softprompt {name} {action.option_strings[0]} {choice}")
    assert not missing, missing
