"""sweeper: the Astraios study (parameter-efficient instruction tuning of code LLMs, arXiv 2401.00788)
as a reusable system: method x scale sweeps on Ray, downstream evaluation, scaling-law analysis."""

__version__ = "0.1.0"
