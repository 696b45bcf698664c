#!/usr/bin/env bash
# The README's test command: install everything the tests need, then run them. Arguments go to
# pytest: `bash tests/run.sh -m "not slow"` is the fast lane (no servers, browser, Ray or
# training; under 2 minutes on two cores), `bash tests/run.sh` the full suite (CI runs that).
# Debian's chromium drives the browser test (Playwright cannot download its own browser here);
# without root or apt the browser test skips with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the browser test will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/python -m pytest -q "$@"
