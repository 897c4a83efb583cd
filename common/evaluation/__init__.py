"""Stage 3: the ``evaluate`` stage (``sampling.py``), the metrics it aggregates (``metrics.py``: pass@k, average MI) and
the ``report`` stage (``report/``)."""
