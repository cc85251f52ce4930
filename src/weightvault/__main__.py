"""``python -m weightvault`` runs the command line, as the ``weightvault`` console script does."""

from weightvault.cli import main

main()
