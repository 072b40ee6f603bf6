#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's chromium and Playwright's Python client.
#
#   bash scripts/install_browser.sh            # VENV=.venv by default
#
# - chromium comes from Debian (`apt-get install chromium`) when we are root (or
#   have password-less sudo) and apt-get exists. `playwright install` is never
#   run: it downloads a browser build from outside the package registries,
#   which fails on these machines; the test launches /usr/bin/chromium instead.
# - playwright and pytest-playwright are pip-installed into the project's venv.
# Idempotent: when everything is present it only checks (well under a second).
# It never fails the build: when something cannot be installed it prints what
# is missing and how to get it, and tests/test_browser.py then skips with that
# reason (or fails, when ACTTAIL_REQUIRE_BROWSER=1).
set -u

VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
CHROMIUM="${ACTTAIL_CHROMIUM:-/usr/bin/chromium}"
PLAYWRIGHT_PIN="playwright==1.65.2"
PYTEST_PLAYWRIGHT_PIN="pytest-playwright==0.10.0"
missing=()

have_chromium() { [ -x "$CHROMIUM" ]; }

install_chromium() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "install_browser: not root and no password-less sudo: cannot apt-get install chromium." >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install_browser: apt-get not found (not a Debian/Ubuntu system)." >&2
        return 1
    fi
    echo "install_browser: installing Debian chromium (apt-get, about a minute the first time) ..."
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null 2>&1
}

have_playwright() { [ -x "$PY" ] && "$PY" -c "import playwright.sync_api, pytest_playwright" >/dev/null 2>&1; }

if ! have_chromium; then
    install_chromium || true
fi
if ! have_chromium; then
    missing+=("chromium at $CHROMIUM (install: apt-get install -y chromium; or set ACTTAIL_CHROMIUM=/path/to/chromium)")
fi

if [ ! -x "$PY" ]; then
    missing+=("the project venv $VENV (run: make setup)")
elif ! have_playwright; then
    echo "install_browser: pip-installing $PLAYWRIGHT_PIN $PYTEST_PLAYWRIGHT_PIN into $VENV ..."
    "$PY" -m pip install -q "$PLAYWRIGHT_PIN" "$PYTEST_PLAYWRIGHT_PIN" || true
    have_playwright || missing+=("playwright + pytest-playwright in $VENV (install: $PY -m pip install $PLAYWRIGHT_PIN $PYTEST_PLAYWRIGHT_PIN)")
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install_browser: ok ($("$CHROMIUM" --version 2>/dev/null | head -1); playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))'))"
else
    echo "install_browser: WARNING: the real-browser test (tests/test_browser.py) will be SKIPPED; missing:" >&2
    for item in "${missing[@]}"; do
        echo "  - $item" >&2
    done
fi
exit 0
