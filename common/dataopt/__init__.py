"""Training-data optimisation: named steps (refactor, clean, select, augment, synthesise) that transform a training
set in order, each keeping every solution correct and reporting what it changed (``base.py``)."""
