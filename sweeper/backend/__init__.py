"""Ray: the only package that imports it (`runtime`, `search`, `driver`, `callbacks`, `cluster`).

The launcher (`sweeper.sweep.launch`) imports these modules only when a sweep runs, so planning,
status and analysis never load Ray.
"""
