"""Event contracts, the topic registry and the Kafka plumbing every service shares."""
