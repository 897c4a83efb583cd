"""Quality signals of a solution: the Maintainability Index (``mi.py``, the paper's preference signal), execution in the
sandbox plus MI for many solutions at once (``scoring.py``), and MI statistics of reference solutions."""
