"""The bottom layer: what every other layer may use and that imports nothing else of mechrefusal — errors,
the on-disk cache, pinned assets, provenance, the precision and device policies, settings flags, and the
`Direction` / `DirectionSet` containers.

Add one: a module here that imports only the standard library and third-party packages (import-linter
enforces it), with its test; the layers above import it by its full path.
"""
