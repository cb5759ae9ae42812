"""`python -m ringkv.bench.consistency`: the same as `ringkv bench consistency`."""

from ringkv.bench.consistency.command import consistency

if __name__ == "__main__":
    consistency()
