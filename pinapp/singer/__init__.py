"""``pinapp singer``: application log files into Kafka, at least once (Singer's role).

A light process, no faust worker: :mod:`.watermark` (progress that survives kill -9),
:mod:`.reader` (complete lines from rotating files), :mod:`.shipper` (acknowledged batches,
heartbeats, retention).
"""
