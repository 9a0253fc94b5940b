#!/bin/sh
# tree-build.sh WORKDIR SNAPSHOT TOKEN BASE: builds the code tree of SNAPSHOT under WORKDIR/trees from the lines
# on standard input: a copy of tree BASE (when not empty) changed by `- PATH` (remove) and `+ HASH MODE PATH`
# (add from the objects), or from nothing; then, after a line `MANIFEST`, the snapshot's manifest, kept for the
# next build. TOKEN is unique to this build. Exit 3: an object is missing (send them again).
cd "$1" || exit 2
# shellcheck disable=SC2034  # id is used by tree-publish.sh, appended to this script
id=$2 b=".b-$2-$3" base=$4
mkdir -p trees || exit 2
cd trees || exit 2
rm -rf "$b"
# Files of a tree are never changed in place (jobs copy them; a new tree replaces a changed file), so a new tree
# shares the unchanged files of its base through hard links: creating thousands of files is what costs.
if [ -n "$base" ] && [ -d "$base/" ]; then
  cp -al "$base/." "$b" 2>/dev/null || { rm -rf "$b"; cp -Rp "$base/." "$b"; } || { rm -rf "$b"; exit 3; }
else
  mkdir "$b" || exit 2
fi
while IFS=' ' read -r op hash mode path; do
  case $op in
    MANIFEST) break ;;
    -) rm -rf "${b:?}/$hash" ;;
    +)
      case "$path" in */*) [ -d "$b/${path%/*}" ] || mkdir -p "$b/${path%/*}" ;; esac
      # rm first: the file may be a link shared with the base tree, which must not change.
      rm -f "$b/$path"
      cp "../objects/$hash" "$b/$path" && chmod "$mode" "$b/$path" || { rm -rf "$b"; exit 3; } ;;
  esac
done
cat > "$b.manifest" || exit 2
