"""A sweep and its folder: the layout (`folder`), the ledger, the trials of a grid, launching, status, progress."""
