#!/bin/sh
# artifacts-inspect.sh REPO PATH...: for each PATH (relative to REPO) that exists, prints `f INDEX MODE SIZE` for a
# plain file (not a link; MODE and SIZE as `ls -ldn` shows them) or `o INDEX KIB` for anything else (KIB: what
# `du -sk` says it holds, an estimate for the progress line; `o INDEX` when du cannot tell).
cd "$1" || exit 2
shift
i=0
set -f
for p; do
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    if l=$(ls -ldn -- "$p"); then
      # shellcheck disable=SC2086
      set -- $l
      printf 'f %d %s %s\n' "$i" "$1" "$5"
    else
      printf 'o %d\n' "$i"
    fi
  elif [ -e "$p" ] || [ -L "$p" ]; then
    if k=$(du -sk -- "$p" 2>/dev/null); then
      printf 'o %d %s\n' "$i" "${k%%[!0-9]*}"
    else
      printf 'o %d\n' "$i"
    fi
  fi
  i=$((i + 1))
done
