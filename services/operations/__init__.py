"""One module per endpoint family: a parsed request through the core pipeline.

Each adds what its endpoint needs on top of the pipeline: reply-cache keys, stored Responses,
pass-through checks.
"""
