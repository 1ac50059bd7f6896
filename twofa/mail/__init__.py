"""Building and sending email: templates, backends, delivery of outbox rows."""
