"""Entry point of a compaction worker process (see ringkv.storage.worker).

Kept apart from `worker` so that `python -m` does not run a module the package already imported.
"""

from ringkv.storage.worker import main

main()
