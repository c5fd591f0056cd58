#!/usr/bin/env bash
# tests/valgrind_leaks.py under valgrind memcheck: fails if any "definitely lost" block was
# allocated from our extension (a loss record whose stack has a frame in _uqattr*.so). CPython and
# NumPy keep some allocations alive until exit, reported under their own frames; the summary of
# those is printed too.
#   tests/valgrind_leaks.sh            (a few minutes: valgrind is ~50x slower)
# The extension is built for valgrind into its own venv (.venv-valgrind, from a copy of the
# working tree): portable (UQATTR_MARCH empty: valgrind does not know AVX-512, which
# -march=native may use) and CPU-only. UQATTR_VALGRIND_PYTHON=path/to/python skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=$(mktemp "${TMPDIR:-/tmp}/uqattr-valgrind.XXXXXX.log")
PY=${UQATTR_VALGRIND_PYTHON:-}
if [ -z "$PY" ]; then
    VENV=$ROOT/.venv-valgrind
    SRC=$(mktemp -d "${TMPDIR:-/tmp}/uqattr-valgrind-src.XXXXXX")
    git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$SRC"
    python3 -m venv "$VENV"
    UQATTR_MARCH= UQATTR_CUDA=0 "$VENV/bin/python" -m pip install -q "$SRC"
    UQATTR_MARCH= UQATTR_CUDA=0 "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$SRC"
    rm -rf "$SRC"
    PY=$VENV/bin/python
fi
"$PY" -c "import uqattr; print('valgrind: build flags', uqattr.build_info()['cflags'])"
export UQATTR_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# PYTHONMALLOC=malloc: every object through malloc, so valgrind sees Python's allocations too
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
    --errors-for-leak-kinds=definite --num-callers=40 --log-file="$LOG" \
    "$PY" "$ROOT/tests/valgrind_leaks.py" 2
echo "valgrind log: $LOG"
grep -E "definitely lost|indirectly lost|ERROR SUMMARY" "$LOG" | sed 's/^==[0-9]*== *//' | tail -4
# records (blank-line separated once the ==PID== prefixes are gone): loss records "definitely
# lost" and memcheck errors (invalid reads / writes, uninitialised values) that pass through _uqattr
# A frame of ours: in _uqattr*.so (no debug info) or in one of our C files (with it).
files=$(cd "$ROOT" && ls csrc/*.c python/uqattr/_ext/*.c | xargs -n1 basename | sed 's/\./\\./' | paste -sd'|')
OURS="_uqattr|\\(($files):[0-9]+\\)"
plain=$(sed 's/^==[0-9]*== \{0,1\}//' "$LOG")
ours_lost=$(awk -v ours="$OURS" 'BEGIN{RS=""} /definitely lost in loss record/ && $0 ~ ours {print; print ""}' <<<"$plain")
ours_errors=$(awk -v ours="$OURS" 'BEGIN{RS=""} !/lost in loss record/ && $0 ~ ours && /^(Invalid|Conditional|Use of uninit|Syscall|Mismatched|Source and destination)/ {print; print ""}' <<<"$plain")
records=$(awk 'BEGIN{RS=""} /definitely lost in loss record/ {n++} END{print n+0}' <<<"$plain")
frames=$(grep -cE "$OURS" "$LOG" || true)
if [ -n "$ours_lost$ours_errors" ]; then
    echo "valgrind: definitely lost blocks / memcheck errors through uqattr's extension:"
    echo "$ours_lost$ours_errors"
    exit 1
fi
echo "valgrind: no definitely lost block and no memcheck error through _uqattr*.so ($records definitely-lost" \
     "records in all, from CPython / NumPy; $frames log lines show frames of ours)"
