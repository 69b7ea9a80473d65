"""Labels and verbalizers as users write them: comma-separated flags (`--labels`, `--verbalizer`) and the label
values a training file holds (the default for `--labels`)."""

from __future__ import annotations

from collections.abc import Iterable

from ..utils.errors import ParameterError, SoftpromptError
from .rows import Row
from .tasks import show


def parse_mapping(text: str, param: str) -> dict[str, str]:
    """`"0=negative,1=positive"` -> {"0": "negative", "1": "positive"}; errors name `param` (e.g. verbalizer)."""
    mapping = {}
    for item in _split_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ParameterError(param, "expected VALUE=WORD pairs separated by commas, got {item!r}", item=item)
        mapping[key.strip()] = value.strip()
    return mapping


def _split_list(text: str) -> list[str]:
    """Comma-separated items; a backslash escapes a comma inside an item."""
    items, current, chars = [], "", iter(text)
    for char in chars:
        if char == "\\":
            current += next(chars, "")
        elif char == ",":
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item for item in items if item.strip()]


def parse_labels(text: str) -> list[str]:
    return [item.strip() for item in _split_list(text)]


DISTINCT_ROWS = 16  # a file of more rows than this whose every label differs holds free text, not classes


def labels_found(rows: Iterable[Row], label_field: str, source: str) -> list[str]:
    """The label values of a file, sorted so label order never depends on row order (default for --labels)."""
    found: set[str] = set()
    number = 0
    for number, row in enumerate(rows, 1):
        if label_field not in row:
            raise SoftpromptError(f"{source}: label field {label_field!r} is not a column")
        if not row[label_field].strip():
            raise SoftpromptError(f"{source} row {number}: empty {show(label_field)}")
        found.add(row[label_field])
    if len(found) == number > DISTINCT_ROWS:
        raise SoftpromptError(
            f"{source}: every one of its {number} rows has its own {show(label_field)}, so it is no label to rank; "
            f"for free-text targets give --target-field {show(label_field)}"
        )
    return sorted(found)
