"""Secrets and config maps: sealed at rest (``sealing``), stored as records (``records``),
referenced by functions (``refs``) and given to their instances as files (``mounts``)."""
