"""The MLflow run: tracking helpers, the run schema, local outputs, store sync, resume, signals and the run session."""
