"""The S3 archive (Secor's role): every raw event persisted exactly once, by event hour.

This package so far holds the archive's layout and record format (pure logic, unit-tested);
the archiver agent, the finalizer and the ``pinapp archive`` commands build on it.
"""
