"""Micro world: a tiny procedural 32x32 image world with captions and an exact oracle."""
