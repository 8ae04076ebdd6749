"""The engagement topology's logic over batches, behind small interfaces over faust (see :mod:`.batcher`)."""
