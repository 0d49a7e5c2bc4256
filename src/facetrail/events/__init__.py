"""Events and their delivery: a durable outbox drained to MQTT (Frigate-style topics) and signed webhooks."""
