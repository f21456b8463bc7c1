"""How agents talk: a message bus (broadcast, direct/mesh), a versioned blackboard with
provenance, the tools agents use for both, and the run's hub (``Comms``) that holds them.
"""

from __future__ import annotations

from .blackboard import Entry, SharedContext
from .bus import CommsError, Message, MessageBus, MessagePolicy, render_inbox
from .hub import (
    AgentOverhead,
    Comms,
    CommTally,
    OverheadReport,
    broadcast,
    mesh_communicate,
    overhead_from_events,
)
from .tools import COMMS_TOOLS

__all__ = [
    "COMMS_TOOLS",
    "AgentOverhead",
    "CommTally",
    "Comms",
    "CommsError",
    "Entry",
    "Message",
    "MessageBus",
    "MessagePolicy",
    "OverheadReport",
    "SharedContext",
    "broadcast",
    "mesh_communicate",
    "overhead_from_events",
    "render_inbox",
]
