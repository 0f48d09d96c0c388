"""Unit tier: pure tests, no Redis. A package so test modules may share basenames with
other tiers."""
