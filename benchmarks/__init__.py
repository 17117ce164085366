"""Performance harness: our evaluation and training against the paper's reference method, as ratios
measured in one run on the same machine and model (`python -m benchmarks`)."""
