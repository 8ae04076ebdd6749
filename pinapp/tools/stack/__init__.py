"""The local stack: real Kafka, MariaDB and an S3 API server on loopback (`pinapp stack`)."""

from pinapp.tools.stack.stack import ServiceStatus, Stack

__all__ = ["ServiceStatus", "Stack"]
