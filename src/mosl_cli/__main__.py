"""``python -m mosl_cli`` (also what ``torchrun -m mosl_cli`` runs)."""

from mosl_cli.cli import main

if __name__ == "__main__":
    main()
