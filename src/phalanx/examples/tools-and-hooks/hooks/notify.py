"""after_task notifier: one line per finished task.

Here it appends to hooks/notifications.log; in real use post the same line to your chat
(a webhook with urllib.request, the URL from an env variable named in the plan's
`env: {pass: [...]}`).
"""

import json
import sys

event = json.load(sys.stdin)
usage = event.get("usage") or {}
line = (
    f"{event['run_id']} {event['task']['id']} done by {event.get('agent')}"
    f" ({usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens)"
)
with open("hooks/notifications.log", "a") as log:
    log.write(line + "\n")
