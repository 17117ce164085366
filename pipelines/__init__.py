"""Producers of the clinical SLM lab: data, tasks, models, fine-tuning and evaluation."""
