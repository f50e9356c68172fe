"""Where files come from and go: filesystems, datasets, listing, the one safe decode, URIs."""
