"""Deployment engines: how a release reaches a target. One per target kind, all one shape.

``deployments.services`` drives an engine through the ``Engine`` protocol only: ``plan`` reads the
target (nothing is touched), ``check_reachable`` and ``apply`` roll a release out step by step, and
when ``apply`` fails after ``touched`` became true, ``undo`` puts the previous release back in front.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from deployments.models import Release, Target
from deployments.recorder import Recorder

# The recorder's step(name): a context manager that records one step, failed if the body raises.
StepContext = AbstractContextManager[Any]
Step = Callable[[str], StepContext]


@runtime_checkable
class Engine(Protocol):
    target: Target

    @property
    def touched(self) -> bool:
        """Whether apply() has changed the target so that undo() has something to put back."""
        ...

    def check_reachable(self) -> str:
        """One line about the target when it answers; TargetUnreachable when it does not."""
        ...

    def plan(self, release: Release, strategy: str) -> dict[str, Any]:
        """What deploying ``release`` with ``strategy`` would change, read from the target."""
        ...

    def apply(self, release: Release, strategy: str, step: Step, migrate: Callable[[], None]) -> str:
        """Roll ``release`` out, each phase in a ``step``; returns the new live colour ("" for none)."""
        ...

    def undo(self) -> None:
        """Put back what apply() changed, so the previous release serves again."""
        ...


def engine_for(target: Target, recorder: Recorder | None = None) -> Engine:
    """The engine of the target's kind (imported on use: each pulls in its own SDK)."""
    if target.kind == Target.Kind.AWS:
        from deployments.engines.aws import AwsEngine

        return AwsEngine(target, recorder)
    from deployments.engines.compose import ComposeEngine

    return ComposeEngine(target, recorder)
