"""``python -m kexp`` runs the CLI."""

from kexp.cli import main

if __name__ == "__main__":
    main()
