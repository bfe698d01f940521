"""The pattern/rewrite engine shared by every optimization rule (see rewrite.py)."""
