"""`python -m ringkv.bench.engine`: the storage-engine benchmark (command.py), which is also how
the harness starts its worker processes (`--worker JOB`)."""

import sys

from ringkv.bench.engine.command import main

if __name__ == "__main__":
    sys.exit(main())
