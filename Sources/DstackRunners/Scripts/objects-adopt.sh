#!/bin/sh
# objects-adopt.sh INCOMING: moves the objects extracted into INCOMING (a folder inside the objects folder) into
# its parent, then removes it: a few mv processes for any number of objects.
cd "$1" || exit 2
# shellcheck disable=SC2011  # object names are hashes
ls -A | xargs -r sh -c 'exec mv -f -- "$@" ..' dstack || exit 3
cd .. && rm -rf "${1##*/}"
