"""Pilot 2.0: an ordered pipeline of small commands that turns a booted VM into a working node."""
