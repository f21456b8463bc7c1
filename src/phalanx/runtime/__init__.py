"""The runtime: pure scheduling decisions (scheduler, policies, retry) and the pieces that
do I/O (engine, executor, orchestrator)."""
