"""The ``twofa`` command line: one module per command group."""
