"""Training: the runner every method shares (``runner.py``: checkpoints, resume, logs, saving the adapter), the methods
(``methods/``: DPO) and the adapter stage function (``stage.py``)."""
