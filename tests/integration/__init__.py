"""Integration tier: real Redis and workers. A package so test modules may share basenames with
other tiers."""
