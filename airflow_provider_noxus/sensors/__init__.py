"""Sensors of the Noxus provider."""
