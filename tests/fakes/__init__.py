"""Fake upstream servers: real HTTP on loopback, speaking the documented wire formats."""
