"""What a run has seen, kept once (observations), and every view of it: the ideal, the
report, the plot, Prometheus metrics, the progress bar and the live page."""
