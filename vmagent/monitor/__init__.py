"""vmagent.monitor."""
