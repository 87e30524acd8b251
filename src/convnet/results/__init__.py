"""A sweep's results: the analysis (pure functions on result records), the report's files, its plots and
TensorBoard's HParams view."""
