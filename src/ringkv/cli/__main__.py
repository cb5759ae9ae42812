"""`python -m ringkv.cli`: the `ringkv` command (how testing/launcher.py starts `ringkv serve`)."""

from ringkv.cli import main

if __name__ == "__main__":
    main()
