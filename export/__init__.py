"""Command line: `python -m export COMMAND ...` (see `python -m export --help`)."""
