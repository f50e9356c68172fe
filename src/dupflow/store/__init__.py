"""The Parquet encodings store: its commit record, the encode job, merging, the run lease."""
