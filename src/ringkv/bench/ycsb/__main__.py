"""`python -m ringkv.bench.ycsb`: the same as `ringkv bench ycsb`."""

from ringkv.bench.ycsb.command import ycsb

if __name__ == "__main__":
    ycsb()
