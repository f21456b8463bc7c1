"""before_task guard: no agent work during a release freeze.

The payload arrives as JSON on stdin (point, run_id, agent, task: id, title, prompt, ...).
Exit 0 lets the task run; exit 2 vetoes it, and what is on stderr is the reason the run
records. Create hooks/FREEZE (its text is the reason) to stop every guarded task.
"""

import json
import sys
from pathlib import Path

event = json.load(sys.stdin)
task = event["task"]["id"]
freeze = Path("FREEZE")  # the hook runs in hooks/ (its cwd)
with open("guard.log", "a") as log:
    log.write(f"{task}: {'vetoed' if freeze.exists() else 'allowed'}\n")
if freeze.exists():
    print(f"release freeze: {freeze.read_text().strip() or 'no changes now'}", file=sys.stderr)
    sys.exit(2)
