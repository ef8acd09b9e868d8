"""Code every trailerlink service shares: settings, logs, durable files, the service skeleton."""
