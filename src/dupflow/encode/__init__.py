"""Files to encodings: the encoder registry, the CNN, one shard, the encode settings."""
