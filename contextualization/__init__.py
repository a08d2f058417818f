"""User-data templates, installed as ``vmagent.contextualization`` (see pyproject's package-dir)."""
