"""Scaling-law analysis of recorded sweeps (or any table): fit, extrapolate, link loss to scores, report."""
