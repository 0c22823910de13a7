"""What the tests share, one module per concern: events, kafka, database, processes, waiting,
metrics."""
