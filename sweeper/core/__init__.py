"""What every stage uses: errors, atomic io, paths, console, the registry type, provenance, cache, memo, config."""
