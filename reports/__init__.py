"""Weekly 2FA coverage reports: extract (SQL) -> compute (pandas) -> render (Jinja2 + chart, CSV) -> deliver."""
