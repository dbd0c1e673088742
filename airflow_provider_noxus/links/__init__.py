"""Links of the Noxus provider."""
