"""Everything a running sandbox holds, shared by the WeChat and admin handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from wxsub_sandbox.cards import CardBook
from wxsub_sandbox.clock import Clock
from wxsub_sandbox.faults import Faults
from wxsub_sandbox.recorder import Recorder
from wxsub_sandbox.tokens import TokenService
from wxsub_sandbox.world import World

__all__ = ["SandboxState"]


@dataclass
class SandboxState:
    world: World
    clock: Clock
    tokens: TokenService
    faults: Faults
    recorder: Recorder
    inflight: set[str] = field(default_factory=set)  # openids with a send being handled
    cards: CardBook = field(init=False)  # service cards (cards.py)

    def __post_init__(self) -> None:
        self.cards = CardBook(self.world)

    @classmethod
    def create(cls, world: World, clock: Clock, recorder: Recorder) -> SandboxState:
        return cls(world, clock, TokenService(world, clock), Faults(clock), recorder)

    def reset(self, *, tokens: bool = False) -> None:
        """World back to its loaded state, faults and records cleared (tokens too if asked)."""
        self.world.reset()
        self.cards.clear()
        self.faults.clear()
        self.recorder.clear()
        if tokens:
            self.tokens.forget()
