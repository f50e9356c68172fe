"""The `dupflow` command line: a thin layer over the library; flags derive from the settings models."""
