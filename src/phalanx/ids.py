"""Identifier types. Plain strings and ints at run time; distinct types for the checker."""

from __future__ import annotations

from typing import NewType

RunId = NewType("RunId", str)
TaskId = NewType("TaskId", str)
AgentName = NewType("AgentName", str)
AttemptId = NewType("AttemptId", int)  # unique within a run: the fencing token of one attempt

__all__ = ["AgentName", "AttemptId", "RunId", "TaskId"]
