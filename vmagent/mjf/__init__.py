"""vmagent.mjf."""
