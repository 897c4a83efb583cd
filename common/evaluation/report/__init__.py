"""The ``report`` stage: loading the evaluation units (``build.py``), the numbers (``stats.py``), the Markdown tables
(``tables.py``) and the figures (``figures.py``)."""
