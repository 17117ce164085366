"""The fine-tuning recipe and what it needs: examples encoded for the trainer, packing, the
epoch sampler, value-token loss weighting, preflight checks and the multi-process launch."""
