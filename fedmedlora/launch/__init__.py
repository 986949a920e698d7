"""Launching runs: the supervised `flwr run` with a private SuperLink (launcher.py, `fedmedlora run`), and the
in-process grid that runs ServerApp and ClientApp in one process (grid.py)."""
