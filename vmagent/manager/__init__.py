"""vmagent.manager."""
