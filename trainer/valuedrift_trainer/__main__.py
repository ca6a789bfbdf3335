"""`python -m valuedrift_trainer ...` — see cli.py."""

from .cli import run

if __name__ == "__main__":
    run()
