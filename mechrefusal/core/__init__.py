"""The bottom layer: what every other layer may use and that imports nothing else of mechrefusal — errors,
the on-disk cache, pinned assets, provenance, the precision and device policies, settings flags, and the
`Direction` / `DirectionSet` containers."""
