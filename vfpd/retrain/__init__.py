"""Retraining: the model adapted to the library the daemon watches, in a separate low-priority
process (worker.py), judged by a gate (gate.py, suite.py) before it may replace the running one
(models.py keeps the versions)."""
