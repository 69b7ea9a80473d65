"""BatchMap: items gathered from several owners into one batch, the prompt each runs under, and the way back.

One forward often serves many owners: the server's requests of many tasks, an ensemble's members, the labels
of each row. The map flattens their items, remembers whose each one is, lists the distinct prompts in play
(by identity, in first-seen order) with the one each item runs under, and splits results back per owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class BatchMap(Generic[T]):
    items: list[T]  # every owner's items, owner after owner
    owner: list[int]  # the owner of each item
    sizes: list[int]  # items per owner
    prompts: list  # the distinct prompts in play
    prompt_of: list[int]  # each item's prompt, as an index into `prompts` (empty without prompts)

    @classmethod
    def of(cls, groups: Sequence[Sequence[T]], prompts: Sequence | None = None) -> BatchMap[T]:
        """`groups[k]` holds owner k's items; `prompts[k]`, if given, is the prompt they run under."""
        owner = [k for k, group in enumerate(groups) for _ in group]
        distinct: dict[int, tuple[int, object]] = {}
        for prompt in prompts or ():
            distinct.setdefault(id(prompt), (len(distinct), prompt))
        prompt_of = [distinct[id(prompts[k])][0] for k in owner] if prompts is not None else []
        return cls(
            [item for group in groups for item in group],
            owner,
            [len(group) for group in groups],
            [prompt for _, prompt in distinct.values()],
            prompt_of,
        )

    @classmethod
    def per_item(cls, items: Sequence[T], prompts: Sequence) -> BatchMap[T]:
        """One owner per item, item i under `prompts[i]`."""
        return cls.of([[item] for item in items], prompts)

    def item_prompts(self) -> list:
        """The prompt of each item."""
        return [self.prompts[index] for index in self.prompt_of]

    def items_of(self, prompt_index: int) -> list[int]:
        """Indices of the items that run under `prompts[prompt_index]`."""
        return [i for i, index in enumerate(self.prompt_of) if index == prompt_index]

    def split(self, values: Sequence | torch.Tensor) -> list:
        """Per-item values (a list, or a tensor along dim 0) back into one part per owner."""
        if isinstance(values, torch.Tensor):
            return list(values.split(self.sizes))
        starts = [0]
        for size in self.sizes:
            starts.append(starts[-1] + size)
        return [list(values[a:b]) for a, b in zip(starts, starts[1:])]
