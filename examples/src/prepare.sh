#!/bin/sh
# Usage: prepare.sh SAMPLES SEED — writes data/train.csv and data/test.csv (80/20 split).
set -e
samples=$1
seed=$2
echo "generating $samples samples with seed $seed"
awk -v n="$samples" -v seed="$seed" 'BEGIN {
  srand(seed)
  print "x,y" > "data/train.csv"
  print "x,y" > "data/test.csv"
  for (i = 0; i < n; i++) {
    x = rand() * 2 - 1
    noise = (rand() + rand() + rand() - 1.5) * 0.2
    y = 3 * x + 2 + noise
    file = (i % 5 == 0) ? "data/test.csv" : "data/train.csv"
    printf "%.6f,%.6f\n", x, y > file
  }
}'
echo "train: $(($(wc -l < data/train.csv) - 1)) rows, test: $(($(wc -l < data/test.csv) - 1)) rows"
