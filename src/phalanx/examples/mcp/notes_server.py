"""A small MCP tool server: a shared notebook for the agents of one run.

Written with the official `mcp` SDK (2.x: ``MCPServer``; in 1.x the same class is
``mcp.server.fastmcp.FastMCP``). phalanx starts it over stdio when the run starts and
stops it when the run ends (see plan.yaml); any MCP client can use it too:

    python notes_server.py        # speaks MCP on stdin/stdout

The notes live in memory for the server's lifetime, that is one run. What the server
writes to stderr goes to .phalanx/runs/RUN_ID/mcp-notes.log.
"""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

server = MCPServer("notes")
notes: list[dict[str, object]] = []


class Note(BaseModel):
    title: str = Field(max_length=120)
    body: str
    tags: list[str] = []


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@server.tool()
def add_note(note: Note) -> str:
    """Save a note (a title, a body and optional tags) for the other agents."""
    notes.append(note.model_dump())
    log(f"add_note {note.title!r} tags={note.tags}")
    return f"saved note {len(notes)}: {note.title}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def find_notes(tag: str = "", text: str = "") -> str:
    """The notes with this tag and/or containing this text (all notes when both are empty)."""
    found = [
        n
        for n in notes
        if (not tag or tag in n["tags"]) and text.lower() in f"{n['title']} {n['body']}".lower()
    ]
    log(f"find_notes tag={tag!r} text={text!r}: {len(found)}")
    return "\n".join(f"- {n['title']}: {n['body']}" for n in found) or "no notes found"


@server.tool()
def delete_notes() -> str:
    """Delete every note (the plan does not give this tool to any agent)."""
    notes.clear()
    log("delete_notes")
    return "deleted"


if __name__ == "__main__":
    log("notes server started")
    server.run()  # stdio
