"""``python -m imgbatch``: the same as the ``imgbatch`` script."""

from imgbatch.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
