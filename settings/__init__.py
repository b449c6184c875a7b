"""The parts config.py is built from: value parsers, backend and access settings, the environment.

Imported one way: config.py imports these, never the reverse.
"""
