"""`python -m effteacher` entry point."""

from effteacher.cli import main

if __name__ == "__main__":
    main()
