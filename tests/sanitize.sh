#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Builds the extension with UQATTR_SANITIZE=address,undefined (setup.py: -O1 -g, any finding
# aborts) from a copy of the working tree into its own venv (.venv-sanitize; the normal build is
# left alone), then runs pytest under it and fails on any sanitizer report, also one from a
# subprocess (reports go to log files, checked at the end).
#
#   UQATTR_DATA=/path/to/datasets tests/sanitize.sh [pytest args, default: -q tests]
#
# Knobs: UQATTR_SANITIZE (default address,undefined), UQATTR_SANITIZE_VENV (default
# .venv-sanitize), UQATTR_CUDA (default 0: the .cu files are not instrumented anyway).
# gcc's ASan must be loaded first into a Python that was not built with it: LD_PRELOAD of
# libasan.so (and libstdc++, see below); leak detection is off (CPython keeps its allocations alive at exit; leaks are
# checked by tests/test_leaks.py and tests/valgrind_leaks.py instead).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SAN=${UQATTR_SANITIZE:-address,undefined}
VENV=${UQATTR_SANITIZE_VENV:-$ROOT/.venv-sanitize}
export UQATTR_DATA="${UQATTR_DATA:-$ROOT/../shared/datasets}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/uqattr-sanitize.XXXXXX")
SRC=$WORK/src LOGS=$WORK/logs
mkdir -p "$SRC" "$LOGS"
# the working tree as it is (tracked and untracked, not ignored files), without build outputs
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$SRC"

python3 -m venv "$VENV"
. "$VENV/bin/activate"
echo "sanitize: building with UQATTR_SANITIZE=$SAN into $VENV" >&2
export UQATTR_SANITIZE=$SAN UQATTR_CUDA=${UQATTR_CUDA:-0}
python -m pip install -q "$SRC[test]"                         # the test dependencies
python -m pip install -q --force-reinstall --no-deps "$SRC"   # this tree's code, sanitized, also on reruns
unset UQATTR_SANITIZE

CC=$(python -c "import sysconfig; print((sysconfig.get_config_var('CC') or 'cc').split()[0])")
LIBASAN=$("$CC" -print-file-name=libasan.so)
# libstdc++ too: ASan intercepts __cxa_throw and must find the real one at start-up, else the first
# C++ exception in any extension (matplotlib, kiwisolver) aborts with "CHECK failed ... __cxa_throw"
LIBSTDCXX=$("$CC" -print-file-name=libstdc++.so.6)
case "$SAN" in *address*) export LD_PRELOAD="$LIBASAN $LIBSTDCXX${LD_PRELOAD:+ $LD_PRELOAD}" ;; esac
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan"
python -c "import uqattr; f = uqattr.build_info()['cflags']; print('sanitize: build flags', f); assert '-fsanitize=' in f, f"

cd "$SRC"  # the copy: the installed (sanitized) build is what gets tested; nothing written into the tree
set +e
# default: the whole suite but for a wall-time bound, meaningless at ASan's speed
[ $# -gt 0 ] || set -- -q tests
python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
reports=$(ls "$LOGS")
if [ -n "$reports" ]; then
    echo "sanitize: sanitizer reports (in $LOGS):" >&2
    for f in "$LOGS"/*; do echo "== $f" >&2; head -n 60 "$f" >&2; done
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "sanitize: pytest failed (exit $status)" >&2
    exit "$status"
fi
echo "sanitize: tests passed, no sanitizer reports ($SAN)"
rm -rf "$WORK"
