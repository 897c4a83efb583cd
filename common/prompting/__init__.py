"""Prompts (``templates.py``: the paper's system message, signature line, chat and completion forms), the one place the
prompt style is decided (``style.py``) and code extraction from replies (``extract.py``)."""
