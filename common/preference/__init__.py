"""Preference data: the labelling rule and pair schema (``pairing.py``), the ``pairs`` stage (``stage.py``), the
``self-generation`` stage (``self_generation.py``) and the conversion to TRL's format (``trl_format.py``)."""
