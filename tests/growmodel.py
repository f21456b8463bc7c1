"""A stateless scripted model for plans that grow (tests/test_grow.py, also loaded by its
crash driver in a subprocess): its answer depends only on the request, so a resumed run
answers exactly as the first session would have.

- ``analyze``: ``{"files": ["src/m0.py", ...]}`` (``ITEMS`` of them)
- a task whose prompt says ``SPAWN n``: first call asks ``spawn_tasks`` for ``n`` subtasks
  (each of them again ``SPAWN n`` when ``RECURSE`` is in the prompt), then answers with
  what the tool said
- anything else: ``done TASK_ID (N upstream)``, N the upstream results in its prompt
"""

from __future__ import annotations

import asyncio
import json
import re

from phalanx.cost import Usage
from phalanx.providers.base import Completion, CompletionRequest, ToolCall

ITEMS = 20
_SPAWN = re.compile(r"SPAWN (\d+)")


class GrowModel:
    simulated = True
    name = "grow"

    def __init__(self, items: int = ITEMS, delay: float = 0.0, objects: bool = False) -> None:
        self.items, self.delay, self.objects = items, delay, objects
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        usage = Usage(input_tokens=10, output_tokens=5)
        user = request.messages[1].content
        tool_results = [m.content for m in request.messages if m.role == "tool"]
        if request.task_id == "analyze":
            files: list[object] = [f"src/m{i}.py" for i in range(self.items)]
            if self.objects:
                files = [{"path": f, "owner": f"team{i}"} for i, f in enumerate(files)]
            return Completion(text=json.dumps({"files": files}), usage=usage)
        spawn = _SPAWN.search(user)
        if spawn and not tool_results:
            n = int(spawn.group(1))
            again = f"SPAWN {n} RECURSE" if "RECURSE" in user else "part"
            tasks = [{"prompt": f"{again} {i}", "title": f"part {i}"} for i in range(n)]
            call = ToolCall(id="c1", name="spawn_tasks", arguments={"tasks": tasks})
            return Completion(text="", usage=usage, tool_calls=(call,))
        if tool_results:
            return Completion(text="collected: " + tool_results[-1][:2000], usage=usage)
        ups = user.count("\n### ")
        return Completion(text=f"done {request.task_id} ({ups} upstream)", usage=usage)

    async def aclose(self) -> None:
        return None
