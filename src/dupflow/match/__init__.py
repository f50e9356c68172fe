"""Encodings to pairs, groups, scores and the manifest: rules, keep policy, the match job."""
