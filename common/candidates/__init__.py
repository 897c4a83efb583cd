"""Stage ``candidates``: the generators that write candidate solutions (``generators.py``: api, local, rewrite) and the
stage function that executes and scores them (``stage.py``)."""
