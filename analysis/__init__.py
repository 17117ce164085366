"""Consumers of the clinical SLM lab: read runs from the MLflow store and test them statistically.

Nothing here imports training or model code: the MLflow tracking store (run search and the
``predictions/<task>.jsonl`` artifacts) is the only input.

Modules: ``runs`` (selection, reference choice, cached artifacts, alignment by example id),
``stats`` (the statistical tests and p-value corrections), ``task_analyses`` (per-task tables
and comparisons), ``ablations`` (epoch trajectory, poisoning), ``job`` (one analysis from
selection to tables), ``outputs`` (tables to a folder and to a ``role=analysis`` run),
``rating_sheets`` / ``rating_results`` (the blinded reader study). Entry points:
``python -m analysis.analyze`` and ``python -m analysis.reader_study``.
"""
