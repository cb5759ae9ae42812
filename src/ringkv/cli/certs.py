"""`ringkv admin certs`: a development CA and certificates for a cluster's nodes and a client,
in one directory (security/certs.py makes them). Exit 0 when written, 2 when an argument is
wrong or a file would be overwritten without --force (nothing is written then).
"""

from __future__ import annotations

import click

from ringkv.cli.exit_codes import EXIT_USAGE


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@click.command("certs")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write into (created if missing).")
@click.option("--nodes", default="n1,n2,n3", show_default=True,
              help="Node ids, comma-separated: one certificate each, CN and a SAN = the node id.")
@click.option("--hosts", default="", help="Extra SANs on every node certificate, comma-separated: the "
              "DNS names and IP addresses clients and peers reach the nodes by (localhost and 127.0.0.1 "
              "are always there).")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650),
              help="Validity of the certificates (and of the CA, when it is made).")
@click.option("--client-name", default="client", show_default=True,
              help="CN of the client certificate (and its file names).")
@click.option("--force", is_flag=True, help="Replace node and client files that exist (the CA is always kept).")
def certs_command(out_dir: str, nodes: str, hosts: str, days: int, client_name: str, force: bool) -> None:
    """Make a development CA and, signed by it, a certificate and key per node (for the RESP,
    HTTP and RPC ports) and a client certificate (for tls_client_auth).

    A CA already in --out (ca.crt, ca.key) signs the new certificates and is kept, so nodes
    and clients that trust it go on trusting. Keys are written with mode 0600. For development
    and tests: a production cluster's certificates come from its own CA.
    """
    from ringkv.errors import ConfigError
    from ringkv.security.certs import write_dev_certs

    node_ids = _names(nodes)
    try:
        made = write_dev_certs(out_dir, node_ids, _names(hosts), days=days, force=force, client_name=client_name)
    except ConfigError as exc:
        click.echo(f"ringkv admin certs: --{exc.field.replace('_', '-')}: {str(exc).split(': ', 1)[1]}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    ca = made.ca_file
    click.echo(f"{'made a new CA' if made.ca_created else 'signed with the existing CA'} {ca}; wrote:")
    for path in made.written:
        click.echo(f"  {path}")
    first = node_ids[0]
    click.echo("serve RESP over TLS with, e.g.:")
    click.echo(f"  ringkv serve --node-id {first}  # with RINGKV_TLS_CERT_FILE={made.out_dir / first}.crt "
               f"RINGKV_TLS_KEY_FILE={made.out_dir / first}.key RINGKV_TLS_PORT=7389")
    click.echo(f"  redis-cli --tls --cacert {ca} -p 7389 PING")
