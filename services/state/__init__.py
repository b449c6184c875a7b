"""State that outlives a request: key-value stores (in process or Redis), the reply cache,
stored Responses and lasting files.
"""
