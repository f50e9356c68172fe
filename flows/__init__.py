"""Prefect flows: the dedup flow (encode, match, apply, report) composed from `tasks`, run on Dask.

Import `flows.dedup` for the flow itself; this package stays empty so that the `dupflow` console
script (rooted at `flows.cli`) does not import Prefect for commands that never use it.
"""
