"""Benchmarks behind one task format (MBPP today: ``mbpp.py``) and the ``prepare`` stage that freezes the training tasks."""
