"""The project's own shared package: event contracts, settings, database, Kafka and outbox."""
