"""Communication overhead: the tokens agents spend talking to each other against the tokens
they spend on work. The run counts each agent's work tokens here; once agents have
communicated at all, every max(20, agents) attempts (and once at the end) the ratio is
checked against ``limits.comm_overhead_warning``, and an alert is raised once per agent and
once for the whole run when it passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..events import Alert, Event

__all__ = ["OverheadWatch"]


class OverheadWatch:
    """Work tokens per agent and the overhead alerts already raised."""

    def __init__(
        self,
        comms: Any,
        limit: float,
        *,
        now: Callable[[], float],
        emit: Callable[[Event], None],
    ) -> None:
        self.comms = comms  # phalanx.comms.Comms, when agents may talk
        self.limit = limit
        self.now = now
        self.emit = emit
        self.work_tokens: dict[str, int] = {}
        self._alerted: set[str] = set()
        self._since = 0

    def worked(self, agent: str, tokens: int) -> None:
        self.work_tokens[agent] = self.work_tokens.get(agent, 0) + tokens

    def check(self, agents: int, force: bool = False) -> None:
        """Alert once (per agent and for the run) when communication tokens pass the limit
        of work tokens. Checked every max(20, ``agents``) calls, or now with ``force``."""
        self._since += 1
        if self.comms is None or not self.comms.has_traffic:
            return
        if self._since < max(20, agents) and not force:
            return
        self._since = 0
        report = self.comms.overhead(self.work_tokens)
        over = [
            (a.agent, a.ratio)
            for a in report.agents
            if a.ratio is not None and a.ratio > self.limit
        ]
        if report.ratio is not None and report.ratio > self.limit:
            over.append(("", report.ratio))
        for agent, ratio in over:
            if agent not in self._alerted:
                self._alerted.add(agent)
                self._alert(agent, ratio)

    def _alert(self, agent: str, ratio: float) -> None:
        who = f"agent {agent}" if agent else "the run"
        self.emit(
            Alert(
                ts=self.now(),
                kind="overhead",
                agent=agent or None,
                message=(
                    f"communication overhead of {who} is {ratio:.0%} of work tokens "
                    f"(warning at {self.limit:.0%})"
                ),
            )
        )
