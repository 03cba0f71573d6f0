"""Measuring code (`posepipe bench`), kept out of the run path."""
