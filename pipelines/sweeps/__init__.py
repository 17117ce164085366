"""Optuna sweeps: the search space, samplers and pruners, storage, the trial runner and the sweep report."""
