"""Data as training reads it: the shard set and its segments, the song records, audio decoding, and
which songs each fold uses."""
