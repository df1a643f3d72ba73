"""One module per `vla-rl <verb>`; each exposes `run(cfg) -> int` (the exit code)."""
