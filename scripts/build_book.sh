#!/usr/bin/env bash
# Build the book (notebooks with their committed outputs, the report, the security notes and
# the API reference) into build/book/html; open build/book/html/book/index.html from disk.
# Sphinx runs with -W: any warning fails the build. Nothing is executed or downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${CLAMU_VENV:-.venv}/bin/python
OUT=${CLAMU_BOOK_OUT:-build/book}
# the API pages are generated on every build: pages of modules that moved or went away must not linger
rm -rf book/api/generated
"$PY" -m sphinx -W --keep-going -q -b html -c book -d "$OUT/doctrees" . "$OUT/html" "$@"
"$PY" book/check_links.py "$OUT/html"
echo "book: $OUT/html/book/index.html"
