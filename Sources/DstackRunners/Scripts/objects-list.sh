#!/bin/sh
# objects-list.sh DIR: the names of the objects in DIR, one a line, creating DIR when missing.
mkdir -p "$1" && cd "$1" && ls -1
