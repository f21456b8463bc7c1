"""B5: the Ray engine's per-task overhead against ``ray.util.ActorPool`` (target <= 1.5x).
Not run: phalanx has no Ray engine yet (issue 8); the row says so."""

from __future__ import annotations

from .common import Config, Row


def run(cfg: Config) -> list[Row]:
    return [
        Row(
            id="B5",
            title="Ray engine per-task overhead",
            figure="-",
            baseline="ray.util.ActorPool",
            target="<= 1.5x baseline",
            verdict_text="not run: needs the Ray engine (issue 8)",
        )
    ]
