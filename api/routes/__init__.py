"""Routers, one module per part of the help article."""
