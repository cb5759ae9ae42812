"""`ringkv version` and `ringkv completion bash|zsh|fish`.

Completion is click's own: the script printed here asks the `ringkv` program itself for
candidates at each Tab (through the `_RINGKV_COMPLETE` environment variable), so it always
matches the installed version's commands and options. Install it once per shell:

    ringkv completion bash > ~/.local/share/bash-completion/completions/ringkv
    ringkv completion zsh > "${fpath[1]}/_ringkv"
    ringkv completion fish > ~/.config/fish/completions/ringkv.fish
"""

from __future__ import annotations

import json
import platform
import sys

import click
from click.shell_completion import get_completion_class

PROG_NAME = "ringkv"
COMPLETE_VAR = "_RINGKV_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    \b
    bash:  ringkv completion bash > ~/.local/share/bash-completion/completions/ringkv
    zsh:   ringkv completion zsh > "${fpath[1]}/_ringkv"
    fish:  ringkv completion fish > ~/.config/fish/completions/ringkv.fish
    or for this shell only:  eval "$(ringkv completion bash)"
    """
    root = ctx.find_root().command
    cls = get_completion_class(shell)
    assert cls is not None, shell  # click ships all three
    click.echo(cls(root, {}, PROG_NAME, COMPLETE_VAR).source())


@click.command("version")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def version_command(as_json: bool) -> None:
    """Print the ringkv version (and the Python running it)."""
    from ringkv import __version__

    if as_json:
        click.echo(json.dumps({"version": __version__, "python": platform.python_version(),
                               "implementation": sys.implementation.name}))
    else:
        click.echo(f"ringkv {__version__} (Python {platform.python_version()})")
