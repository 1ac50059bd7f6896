"""Wevion two-factor authentication: the domain core.

This package knows no queue, no web framework and no command line. The edges (``cli``, ``api``, ``workers``)
call its functions with a SQLAlchemy session and a clock, and translate its errors once.
"""
