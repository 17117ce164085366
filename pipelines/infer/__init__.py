"""Inference: free and constrained decoding, scoring answers, evaluating a model, harmonizing series files."""
