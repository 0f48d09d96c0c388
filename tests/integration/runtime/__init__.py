"""Worker-runtime tests (issue 3): real processes on real Redis."""
