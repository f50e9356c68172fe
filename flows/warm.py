"""Imported by each worker of the local cluster that `dupflow run` starts (Dask's `preload`), while the
Prefect API starts beside it: the first task then finds Prefect, the tasks, the encoders and the matcher
already imported instead of importing them on the run's critical path."""

import dupflow.encode.encoding
import dupflow.match.job
import dupflow.tasks  # noqa: F401
