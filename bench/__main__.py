"""Allow ``python -m bench`` as an alias for the ``bench`` console script."""

from bench.cli import main

if __name__ == "__main__":
    main()
