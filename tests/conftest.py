"""Shared test configuration: every test imports the project from this checkout."""
