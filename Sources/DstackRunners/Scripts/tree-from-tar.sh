#!/bin/sh
# tree-from-tar.sh WORKDIR SNAPSHOT TOKEN: builds the code tree of SNAPSHOT under WORKDIR/trees from a tar stream
# on standard input holding its files and, as .dstack-manifest-TOKEN, its manifest: one tar for a runner's first
# tree instead of a cp and a chmod per file.
cd "$1" || exit 2
# shellcheck disable=SC2034  # id is used by tree-publish.sh, appended to this script
id=$2 b=".b-$2-$3"
mkdir -p trees || exit 2
cd trees || exit 2
# The code goes in $b/repo, as tree-build.sh does.
rm -rf "$b" && mkdir "$b" "$b/repo" || exit 2
tar -C "$b/repo" -xpf - || { rm -rf "$b"; exit 3; }
mv -f "$b/repo/.dstack-manifest-$3" "$b.manifest" || { rm -rf "$b"; exit 3; }
