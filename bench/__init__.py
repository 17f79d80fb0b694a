"""``make bench``: throughput, upload, status latency, fairness and memory of the real stack."""
