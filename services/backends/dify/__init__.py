"""The Dify backend: each configured Dify app is a model (backend.py).

Its conversation memory, stream events, lasting files and workflow images are one module each.
"""
