"""Client-facing protocol adapters over the node's services (ringkv.service): the Redis
protocol (`resp` codec, `resp_server` connections, `resp_commands` and `resp_ringkv` handlers)
and the REST/JSON API (`http_codec`, `http_routes`, `http_admin`, `http_serving`, with `http_models`,
`http_problems`, `http_metrics`).

Adapters turn wire bytes into calls on a `KeyValueService` or `AdminService` and results
into wire bytes. They import the contract and `ringkv.errors`, never the node.
"""
