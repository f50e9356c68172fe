"""Prefect flows: the dedup flow (encode, match, apply, report) composed from `dupflow.tasks`, run on Dask.

Installed as `dupflow.flows` (the folder is linked in as src/dupflow/flows). Import `dupflow.flows.dedup`
for the flow itself; this package stays empty so that the `dupflow` console script (rooted at
`dupflow.flows.cli`) does not import Prefect for commands that never use it.
"""
