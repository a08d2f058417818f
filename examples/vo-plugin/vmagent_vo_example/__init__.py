"""An example VO extension for vmagent."""
