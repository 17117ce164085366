"""Data records, data sources and the frozen train/test split."""
