"""Operators of the Noxus provider."""
