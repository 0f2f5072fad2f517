"""The detection core: pure Python, no I/O, no clock reads, no settings."""
