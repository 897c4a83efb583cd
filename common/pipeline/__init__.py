"""The stage graph: every stage declared once (``stages.py``), the registry that derives fingerprints, recipes and
variants from the declarations (``registry.py``), config views (``view.py``), run directories and manifests
(``artifacts.py``) and the runner (``runner.py``). ``docs/design.md`` explains how they fit."""
