"""mi-align: fine-tune code LLMs towards more maintainable Python without losing functional correctness.

The package does all the work; notebooks and the CLI (``python -m common ...``) are thin doors into it. Heavy
modules (torch, transformers, TRL) are imported only by the functions that need them, so ``common.sandbox`` and
``common.mi`` stay cheap to import.
"""

__version__ = "0.1.0"
