"""The ground floor of HIS-MARL, shared by every layer: the array namespace (each formula once for
numpy and torch), the config mechanism (typed, validated sections and `--set` values), the registry
helper, and storage (the cache folder, atomic writes, files moved aside when unusable)."""
