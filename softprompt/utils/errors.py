"""The exception types the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence


class SoftpromptError(Exception):
    """A problem with the user's input (file, row, field, folder) that they can fix."""


class ParameterError(SoftpromptError):
    """A bad value of one parameter, named as Python spells it (`init_text: ...`).

    Library callers and HTTP clients (through prompt uploads) never typed a flag, so the message names the
    parameter; the CLI, whose users did, spells the same names as flags (`--init-text: ...`). `detail` is a
    `str.format` template: its `{name}` fields not given in `values` are other parameters, spelled the same way.
    """

    def __init__(self, param: str, detail: str, **values: object) -> None:
        self.param, self.detail, self.values = param, detail, values
        super().__init__(self.spelled(str))

    @classmethod
    def not_one_of(cls, param: str, value: object, choices: Sequence[str]) -> ParameterError:
        return cls(param, "must be one of {choices}, got {value!r}", choices=", ".join(choices), value=value)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with every parameter name passed through `spell` (e.g. to a flag)."""
        names = {name for _, name, _, _ in string.Formatter().parse(self.detail) if name}
        params = {name: spell(name) for name in names - self.values.keys()}
        return f"{spell(self.param)}: {self.detail.format(**params, **self.values)}"
