"""A run's directory: its files (``files``), its layout and writer (``runlog``), its checkpoints, its lock and
the record of the code that ran (``provenance``)."""
