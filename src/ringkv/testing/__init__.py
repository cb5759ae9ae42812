"""Test support: launching real node processes (and, later, the deterministic simulator)."""
