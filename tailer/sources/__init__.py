"""The sources stage (issue 12): who sends events, how far behind they are, what they lost. See stage.py
(ingest, the loop) and state.py (the state rules and the ``Source`` item the API serves)."""
