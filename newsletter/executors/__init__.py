"""Who runs a run's new digests: the seam that splits them into shards, with an in-process
executor (shards.py), local processes (parallel.py), and workers on other machines taking the shards
from the PostgreSQL database through procrastinate (distributed.py). None of them imports the pipeline."""
