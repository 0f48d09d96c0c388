"""``python -m tq_console``."""

from tq_console.cli import main

main()
