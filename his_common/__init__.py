"""Small utilities shared by every layer of HIS-MARL: the cache folder and atomic file writes."""
