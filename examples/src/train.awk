# Gradient descent for y = w*x + b on a CSV with a header; prints the loss as it goes.
BEGIN { FS = "," }
NR > 1 { x[n] = $1; y[n] = $2; n++ }
END {
  w = 0; b = 0
  for (e = 1; e <= epochs; e++) {
    gw = 0; gb = 0; loss = 0
    for (i = 0; i < n; i++) {
      err = w * x[i] + b - y[i]
      gw += err * x[i]; gb += err; loss += err * err
    }
    w -= lr * 2 * gw / n; b -= lr * 2 * gb / n
    if (e == 1 || e % 50 == 0 || e == epochs) printf "epoch %d loss %.5f w %.4f b %.4f\n", e, loss / n, w, b
  }
  printf "%.6f %.6f\n", w, b > "model/weights.txt"
  print "saved model/weights.txt"
}
