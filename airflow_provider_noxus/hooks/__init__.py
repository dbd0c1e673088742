"""Hooks of the Noxus provider."""
