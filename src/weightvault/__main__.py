"""``python -m weightvault`` runs the command line."""

from weightvault.cli.app import main

main()
