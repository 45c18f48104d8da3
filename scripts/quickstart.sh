#!/usr/bin/env bash
# Set up an isolated environment (.venv) and run the main job or the test suite.
#
#   bash scripts/quickstart.sh main [ARGS...]   # python -m mechrefusal.reproduce --preset quick ARGS (embedded model)
#   bash scripts/quickstart.sh test [ARGS...]   # the whole test suite (fast and slow tiers)
#
# Both jobs install Debian's chromium (PNG figures, the browser test) and wordnet-base (AutoDAN) when
# missing and run as root.
#
# MECHREFUSAL_TORCH overrides the torch requirement (default: the CPU build torch==2.13.0; use e.g.
# MECHREFUSAL_TORCH=torch for a CUDA build). PYTHON picks the interpreter (default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: bash scripts/quickstart.sh main|test [ARGS...]" >&2
    exit 2
fi
job=$1
shift
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
venv=${MECHREFUSAL_VENV:-.venv}
torch_requirement=${MECHREFUSAL_TORCH:-torch==2.13.0}

# Reinstall only when the requirements changed since the last setup. constraints.txt holds the exact
# versions the tests last passed with, so a new upstream release cannot break a fresh setup unseen.
want="$(cat pyproject.toml constraints.txt; echo "$torch_requirement")"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.mechrefusal-installed" 2>/dev/null)" != "$want" ]; then
    echo "setting up $venv with $python and $torch_requirement ..." >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    # torch first and pinned: an unpinned torch would pull gigabytes of CUDA packages.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$torch_requirement"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
    printf '%s' "$want" > "$venv/.mechrefusal-installed"
fi

# Debian packages, installed when missing and apt-get is usable (root): chromium, which kaleido uses for
# the PNG figures (without it the main job draws only the HTML ones) and the report's browser test
# drives, and wordnet-base, the WordNet files AutoDAN's offline rephraser reads.
debian=()
! command -v chromium >/dev/null && debian+=(chromium)
[ ! -f /usr/share/wordnet/index.noun ] && debian+=(wordnet-base)
if [ ${#debian[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's ${debian[*]} ..." >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${debian[@]}" >/dev/null
fi

case "$job" in
    main) exec "$venv/bin/python" -m mechrefusal.reproduce --preset quick "$@" ;;
    test) exec "$venv/bin/python" -m pytest "$@" ;;
    *) echo "unknown job '$job': use main or test" >&2; exit 2 ;;
esac
