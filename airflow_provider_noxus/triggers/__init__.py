"""Triggers of the Noxus provider."""
