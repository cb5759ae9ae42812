"""The exit codes of the `ringkv` command, which scripts can rely on (the list with every case
is in the package's docstring, ringkv/cli/__init__.py), and the help text that shows them.
"""

EXIT_OK = 0
EXIT_NO = 1  # not found / nothing deleted / condition not met
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_UNREACHABLE = 3
EXIT_SERVER_ERROR = 4

EXIT_CODES_HELP = """\b
Exit codes of get, put, del, scan, info:
  0  success
  1  not found (get), nothing deleted (del), key exists (put --if-not-exists)
  2  usage error
  3  could not reach the node (or no answer within --timeout-ms)
  4  the node answered with an error"""
