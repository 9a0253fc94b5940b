#!/bin/sh
# tree-build.sh WORKDIR SNAPSHOT TOKEN BASE: builds the code tree of SNAPSHOT under WORKDIR/trees from the lines
# on standard input: a copy of tree BASE (when not empty) changed by `- PATH` (remove) and `+ HASH MODE PATH`
# (add from the objects), or from nothing; then, after a line `MANIFEST`, the snapshot's manifest, kept for the
# next build. The tree is built as trees/.b-SNAPSHOT-TOKEN/repo and published (tree-publish.sh) as trees/SNAPSHOT, a
# link to that repo folder. TOKEN is unique to this build. Exit 3: an object is missing (send them again).
cd "$1" || exit 2
# shellcheck disable=SC2034  # id is used by tree-publish.sh, appended to this script
id=$2 b=".b-$2-$3" base=$4
mkdir -p trees || exit 2
cd trees || exit 2
rm -rf "$b"
# Files of a tree are never changed in place (jobs copy them; a new tree replaces a changed file), so a new tree
# shares the unchanged files of its base through hard links: creating thousands of files is what costs.
# The code goes in $b/repo: a job's folder is then one `cp -Rp` of $b (see dstack_start), no mkdir of its own.
mkdir "$b" || exit 2
if [ -n "$base" ] && [ -d "$base/" ]; then
  cp -al "$base/." "$b/repo" 2>/dev/null || { rm -rf "$b/repo"; cp -Rp "$base/." "$b/repo"; } || { rm -rf "$b"; exit 3; }
else
  mkdir "$b/repo" || exit 2
fi
r="$b/repo"
while IFS=' ' read -r op hash mode path; do
  case $op in
    MANIFEST) break ;;
    -) rm -rf "${r:?}/$hash" ;;
    +)
      case "$path" in */*) [ -d "$r/${path%/*}" ] || mkdir -p "$r/${path%/*}" ;; esac
      # rm first: the file may be a link shared with the base tree, which must not change.
      rm -f "$r/$path"
      cp "../objects/$hash" "$r/$path" && chmod "$mode" "$r/$path" || { rm -rf "$b"; exit 3; } ;;
  esac
done
cat > "$b.manifest" || exit 2
