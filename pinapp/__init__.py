"""pinapp: real-time engagement analytics on faust-streaming, Kafka and SingleStore."""

__version__ = "0.1.0"
