"""vmagent: the in-VM agent that turns a bare cloud VM into a grid working node and retires it cleanly."""

__version__ = "0.1.0"
