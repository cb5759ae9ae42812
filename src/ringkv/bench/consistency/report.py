"""The consistency benchmark's report (docs/benchmarks/consistency.md), from a `BenchRun`.

    text = render(run, note="")

Every figure of the main tables is a median over the repeats (ops/s and each percentile taken
separately); ratios are taken per repeat, between the two measurements of the same repeat,
and their median quoted. Counts (operations, refusals, failures, counters) are sums over the
repeats. Latencies are in milliseconds, from the clients' HdrHistograms.
"""

from __future__ import annotations

import statistics
import time

from ringkv.bench.consistency.harness import (
    CONTENDED,
    OPERATION,
    PROBE_TESTS,
    TESTS,
    BenchRun,
    PhaseMeasurement,
)
from ringkv.bench.consistency.loadgen import CAS, GAVE_UP, INCR, PING, READ, REFUSED, WRITE
from ringkv.bench.consistency.sessions import __doc__ as SESSIONS_DOC
from ringkv.bench.ycsb.harness import CLIENT_SATURATION, CLIENT_SHARE, MACHINE_SATURATION

CAS_RATIO_TARGET = 3.0  # ringkv CAS ops/s over etcd CAS ops/s, at least
INCR_P99_TARGET = 3.0  # ringkv INCR p99 over ringkv SET p99, at most
PERCENTILES = (50.0, 99.0, 99.9)
OTHER_LOAD_SHARE = 0.25  # of the machine's cores, used by others while it was saturated (as ycsb's)

# Round trips and RPC messages of each operation on the 3-node cluster (N=3, W=2, majority 2),
# from docs/consistency.md and docs/cluster.md; the coordinator's or proposer's own replica or
# acceptor is local, so "to a majority" means waiting for one of the two others.
ROUND_TRIP_MODEL = (
    ("SET", "1: the coordinator writes its own replica and sends the record to both others, "
     "answering when one has it", "4 (2 ReplicaPut, 2 replies)"),
    ("INCR or CAS, leased", "2: Propose at the leased ballot to both others, chosen when one "
     "accepted; then the commit to both, answering when one stored it (W=2 with the proposer)",
     "8 (2 Propose, 2 Accepted, 2 Commit, 2 acks)"),
    ("INCR or CAS, full round", "3: Prepare, then Propose, then the commit, each answered by one "
     "of the two others", "12 (Prepare, Propose and commit: 4 each)"),
    ("SERIAL GET", "1 (Prepare) when the key's last round is known committed; 3 when the read "
     "must first finish a round (Propose the value found, and its commit)", "4, or 8 + 4 for a commit"),
    ("any consensus command sent to a node that is not the key's first replica", "+1: the node "
     "forwards it to that replica (the proposer) and relays the answer", "+2 (Forward, reply)"),
    ("etcd Put or Txn", "1 raft round trip: the leader appends to its log and a follower's, each "
     "fsynced, before applying; a follower that took the request forwards it to the leader (+1)",
     "gateway JSON to gRPC inside the member, then raft's append messages"),
)


def _ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:,.0f}"


def _med(values) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def _pct(m: PhaseMeasurement, p: float) -> float:
    return m.histogram.get_value_at_percentile(p)


def _repeats(n: int) -> str:
    return "1 repeat" if n == 1 else f"{n} repeats"


def _systems(run: BenchRun) -> list[str]:
    return list(run.config.systems)


def _failed(m: PhaseMeasurement) -> int:
    return sum(m.result.errors().values())


def _operations_table() -> list[str]:
    """sessions.py's table, so the report and the code agree."""
    lines = SESSIONS_DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| operation"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


# ---------------------------------------------------------------------- targets


def cas_ratios(run: BenchRun) -> list[float]:
    """ringkv CAS ops/s over etcd CAS ops/s, per repeat."""
    etcd = {m.repeat: m for m in run.of("etcd", CAS)}
    return [m.throughput / etcd[m.repeat].throughput for m in run.of("ringkv", CAS)
            if m.repeat in etcd and etcd[m.repeat].throughput > 0]


def incr_p99_ratios(run: BenchRun) -> list[float]:
    """ringkv INCR p99 over ringkv SET p99, per repeat."""
    sets = {m.repeat: m for m in run.of("ringkv", WRITE)}
    return [_pct(m, 99) / _pct(sets[m.repeat], 99) for m in run.of("ringkv", INCR)
            if m.repeat in sets and _pct(sets[m.repeat], 99) > 0]


def verdicts(run: BenchRun) -> list[tuple[str, list[float], str, str]]:
    """(what, per-repeat ratios, target, verdict) of the issue's two targets."""
    out = []
    cas = cas_ratios(run)
    verdict = "n/a (etcd not measured)" if not cas else (
        "MET" if _med(cas) >= CAS_RATIO_TARGET else "SHORT")
    out.append(("ringkv CAS ops/s / etcd CAS ops/s", cas, f">= {CAS_RATIO_TARGET:g}x", verdict))
    incr = incr_p99_ratios(run)
    verdict = "n/a" if not incr else ("MET" if _med(incr) <= INCR_P99_TARGET else "SHORT")
    out.append(("ringkv INCR p99 / ringkv SET p99", incr, f"<= {INCR_P99_TARGET:g}x", verdict))
    return out


def targets_table(run: BenchRun) -> list[str]:
    lines = ["| target | per repeat | median | target | verdict |", "|---|---|---:|---|---|"]
    for what, ratios, target, verdict in verdicts(run):
        per = ", ".join(f"{r:.2f}x" for r in ratios) or "-"
        med = f"{_med(ratios):.2f}x" if ratios else "-"
        lines.append(f"| {what} | {per} | {med} | {target} | {verdict} |")
    return lines


# ---------------------------------------------------------------------- tables


def results_table(run: BenchRun) -> list[str]:
    lines = [
        "| test | system | operation | ops/s | p50 ms | p99 ms | p99.9 ms | operations | refused | gave up | failed |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for test in TESTS:
        for s in _systems(run):
            ms = run.of(s, test)
            if not ms:
                continue
            pct = " | ".join(_ms(_med(_pct(m, p) for m in ms)) for p in PERCENTILES)
            outcomes = [m.result.outcomes() for m in ms]
            lines.append(
                f"| {test} | {s} | {OPERATION[s][test]} | {_med(m.throughput for m in ms):,.0f} | {pct} | "
                f"{sum(m.result.operations for m in ms):,} | {sum(o[REFUSED] for o in outcomes):,} | "
                f"{sum(o[GAVE_UP] for o in outcomes):,} | {sum(_failed(m) for m in ms):,} |")
    return lines


def repeats_table(run: BenchRun) -> list[str]:
    n = run.config.repeats
    lines = ["| test | system | " + " | ".join(f"repeat {i + 1}" for i in range(n)) + " |",
             "|---|---|" + "---:|" * n]
    for test in TESTS:
        for s in _systems(run):
            ms = run.of(s, test)
            if ms:
                cells = [f"{m.throughput:,.0f} (p99 {_ms(_pct(m, 99))})" for m in ms]
                lines.append(f"| {test} | {s} | " + " | ".join(cells) + " |")
    return lines


def contended_table(run: BenchRun) -> list[str]:
    cfg = run.config
    lines = [
        "| system | attempts/s | applied/s | applied | refused | gave up | failed | p50 ms | p99 ms | p99.9 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in _systems(run):
        ms = run.of(s, CONTENDED)
        if not ms:
            continue
        outcomes = [m.result.outcomes() for m in ms]
        applied_rate = _med(o["applied"] / m.elapsed_s for o, m in zip(outcomes, ms) if m.elapsed_s > 0)
        total = sum(sum(o.values()) for o in outcomes) or 1
        applied = sum(o["applied"] for o in outcomes)
        pct = " | ".join(_ms(_med(_pct(m, p) for m in ms)) for p in PERCENTILES)
        lines.append(
            f"| {s} | {_med(m.throughput for m in ms):,.0f} | {applied_rate:,.0f} | "
            f"{applied:,} ({applied / total:.0%}) | {sum(o[REFUSED] for o in outcomes):,} | "
            f"{sum(o[GAVE_UP] for o in outcomes):,} | {sum(_failed(m) for m in ms):,} | {pct} |")
    lines += ["", f"{cfg.clients} tasks on {cfg.hot_keys} keys ({cfg.clients / cfg.hot_keys:g} tasks "
              "per key), each task always on the same key, a CAS loop as in the uncontended test: a "
              "refusal answers the current version, which the task's next attempt uses."]
    return lines


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def counters_table(run: BenchRun) -> list[str]:
    lines = [
        "| test | operations answered | paxos commands | SERIAL reads | leased (one round trip) | "
        "leased share | chosen | retries | stale leases | forwarded | forwarded share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for test in TESTS:
        ms = run.of("ringkv", test)
        if not ms:
            continue
        c = {k: sum(m.counters.get(k, 0) for m in ms) for k in ms[0].counters}
        ops = sum(m.result.operations for m in ms)
        lines.append(
            f"| {OPERATION['ringkv'][test]} | {ops:,} | {c['paxos_commands']:,} | {c['paxos_reads']:,} | "
            f"{c['paxos_leased']:,} | {_share(c['paxos_leased'], c['paxos_commands'])} | "
            f"{c['paxos_chosen']:,} | {c['paxos_retries']:,} | {c['paxos_stale_leases']:,} | "
            f"{c['forwarded']:,} | {_share(c['forwarded'], ops)} |")
    return lines


def probe_table(run: BenchRun) -> list[str]:
    lines = [
        "| system | operation | operations | p50 ms | mean ms | p99 ms | failed | forwarded | leased |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in _systems(run):
        for test in PROBE_TESTS:
            m = run.probe(s, test)
            if m is None:
                continue
            ops = m.result.operations
            c = m.counters
            fwd = _share(c["forwarded"], ops) if c else ""
            leased = _share(c["paxos_leased"], c["paxos_commands"]) if c and c["paxos_commands"] else ""
            lines.append(
                f"| {s} | {OPERATION[s][test]} | {ops:,} | {_ms(_pct(m, 50))} | "
                f"{_ms(m.histogram.get_mean_value())} | {_ms(_pct(m, 99))} | {_failed(m)} | {fwd} | {leased} |")
    return lines


def cpu_table(run: BenchRun) -> list[str]:
    lines = [
        "| system | test | seconds | ops/s | client processes (share of a core each) | client CPU us/op | "
        "server cores | server CPU us/op | other processes (cores) | machine busy |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for test in TESTS:
        for s in _systems(run):
            ms = run.of(s, test)
            if not ms:
                continue
            loads = [m.client_loads() for m in ms]
            per_process = ", ".join(f"{_med(x[i] for x in loads):.0%}" for i in range(len(loads[0])))
            busy = _med(m.machine_busy for m in ms)
            lines.append(
                f"| {s} | {OPERATION[s][test]} | {_med(m.elapsed_s for m in ms):.1f} | "
                f"{_med(m.throughput for m in ms):,.0f} | {per_process} | "
                f"{_med(m.client_cpu_s / max(m.result.operations, 1) * 1e6 for m in ms):,.0f} | "
                f"{_med(m.server_cpu_s / m.elapsed_s for m in ms if m.elapsed_s > 0):.2f} | "
                f"{_med(m.server_cpu_s / max(m.result.operations, 1) * 1e6 for m in ms):,.0f} | "
                f"{_med(m.other_cores for m in ms):.2f} | {busy:.0%}"
                + (" (saturated)" if busy >= MACHINE_SATURATION else "") + " |")
    return lines


def path_figures(test: str, counters: dict[str, int], operations: int) -> tuple[float, float | None, float, float]:
    """(forwarded share, leased share or None, replica round trips, messages) per operation of
    a ringkv test, from its counters and ROUND_TRIP_MODEL. Messages are every message a node
    handles for it, the client's request and reply included (a SET: 2 + 4)."""
    ops = operations or 1
    fwd = counters.get("forwarded", 0) / ops
    if test == WRITE:
        return fwd, None, 1.0, 6.0
    if test == READ:  # Prepare only, unless a round must be finished first
        return fwd, None, fwd + 1.0, 2 + 2 * fwd + 4
    commands = counters.get("paxos_commands", 0) or 1
    leased = counters.get("paxos_leased", 0) / commands
    retries = counters.get("paxos_retries", 0) / commands  # each one a full round more
    trips = fwd + 2 * leased + 3 * (1 - leased) + 3 * retries
    msgs = 2 + 2 * fwd + 8 * leased + 12 * (1 - leased) + 12 * retries
    return fwd, leased, trips, msgs


def _summed(ms: list[PhaseMeasurement]) -> tuple[dict[str, int], int]:
    counters = {k: sum(m.counters.get(k, 0) for m in ms) for k in ms[0].counters}
    return counters, sum(m.result.operations for m in ms)


def _server_us(ms: list[PhaseMeasurement]) -> float:
    return _med(m.server_cpu_s / max(m.result.operations, 1) * 1e6 for m in ms)


def round_trips(run: BenchRun) -> list[str]:
    """The model of round trips per operation, then what this run measured of it."""
    lines = ["| operation | replica round trips before the answer | RPC messages |", "|---|---|---|"]
    lines += [f"| {op} | {rt} | {msgs} |" for op, rt, msgs in ROUND_TRIP_MODEL]
    lines += ["", "Measured (loaded: the tests above, counters summed over the repeats; unloaded: "
              "the one-client probe). Messages: every message the nodes handle per operation, the "
              "client's request and reply included, from the model and the counters.", "",
              "| ringkv operation | forwarded | leased | replica round trips per op | messages per op "
              "| server CPU us/op (loaded) | CPU x SET's | unloaded p50 ms | unloaded p50 - PING p50 ms |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ping = run.probe("ringkv", PING)
    ping_p50 = _pct(ping, 50) if ping is not None else None
    set_cpu = None
    for test in (WRITE, INCR, CAS, READ):
        ms = run.of("ringkv", test)
        if not ms:
            continue
        fwd, leased, trips, msgs = path_figures(test, *_summed(ms))
        cpu = _server_us(ms)
        if test == WRITE:
            set_cpu = cpu
        probe = run.probe("ringkv", test)
        p50 = _pct(probe, 50) if probe is not None else None
        cells = [
            OPERATION["ringkv"][test],
            f"{fwd:.0%}",
            "-" if leased is None else f"{leased:.0%}",
            f"{trips:.2f}" + (" or more" if test == READ else ""),
            f"{msgs:.1f}",
            f"{cpu:,.0f}",
            f"{cpu / set_cpu:.2f}" if set_cpu else "-",
            "-" if p50 is None else _ms(p50),
            "-" if p50 is None or ping_p50 is None else _ms(p50 - ping_p50),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *round_trip_summary(run)]
    return lines


def round_trip_summary(run: BenchRun) -> list[str]:
    """The table above in sentences, for the INCR target's reader."""
    sets, incrs = run.of("ringkv", WRITE), run.of("ringkv", INCR)
    if not sets or not incrs:
        return []
    _, _, s_trips, s_msgs = path_figures(WRITE, *_summed(sets))
    i_counters, i_ops = _summed(incrs)
    i_fwd, i_leased, i_trips, i_msgs = path_figures(INCR, i_counters, i_ops)
    out = [
        f"- **Loaded.** A SET is {s_trips:.0f} replica round trip and {s_msgs:.0f} messages. Of "
        f"{i_counters['paxos_commands']:,} INCR, {i_leased:.0%} took the leased path (Propose, "
        f"then the commit) and {i_fwd:.0%} were first forwarded to the key's proposer, so an INCR "
        f"averaged {i_trips:.2f} replica round trips and {i_msgs:.1f} messages ({i_msgs / s_msgs:.1f}x "
        f"SET's) and cost {_server_us(incrs) / max(_server_us(sets), 1e-9):.2f}x SET's server CPU. "
        f"Its p99 was {_med(_pct(m, 99) for m in incrs) / 1000:.2f} ms against SET's "
        f"{_med(_pct(m, 99) for m in sets) / 1000:.2f} ms.",
    ]
    ping, set_p, incr_p = (run.probe("ringkv", t) for t in (PING, WRITE, INCR))
    if ping is not None and set_p is not None and incr_p is not None:
        base = _pct(ping, 50)
        p_counters, p_ops = incr_p.counters, incr_p.result.operations
        p_fwd, _, p_trips, _ = path_figures(INCR, p_counters, p_ops)
        incr_extra = _pct(incr_p, 50) - base
        out.append(
            f"- **Unloaded** (one client, p50): a client's round trip to a node (PING) is "
            f"{_ms(base)} ms; a SET adds {_ms(_pct(set_p, 50) - base)} ms for its one replica round "
            f"trip and the write; an INCR adds {_ms(incr_extra)} ms for {p_trips:.2f} round trips "
            f"(the probe's key {'was' if p_fwd > 0.5 else 'was not'} forwarded), about "
            f"{_ms(incr_extra / p_trips)} ms per round trip with the work at both ends.")
    e_cas, r_cas = run.probe("etcd", CAS), run.probe("ringkv", CAS)
    if e_cas is not None and r_cas is not None:
        out.append(f"- **etcd's CAS unloaded**: {_ms(_pct(e_cas, 50))} ms at p50 against ringkv's "
                   f"{_ms(_pct(r_cas, 50))} ms: one raft round trip with an fsync on the leader and a "
                   "follower, plus the JSON gateway.")
    return out


def warnings(run: BenchRun) -> list[str]:
    """Failures and refusals one by one; load-generator limits summed up per system."""
    out = []
    near_core: dict[str, list[str]] = {}
    client_bound: dict[str, list[str]] = {}
    other_load: dict[str, list[str]] = {}
    for m in run.measurements + run.probes:
        probe = m not in run.measurements
        where = f"{OPERATION[m.system][m.test]} " + ("probe" if probe else f"r{m.repeat + 1}")
        failed = _failed(m)
        if failed:
            out.append(f"**{m.system} {where}**: {failed:,} operations failed (e.g. "
                       f"{'; '.join(m.result.error_samples()[:2])})")
        refused = m.result.outcomes()[REFUSED]
        if m.test != CONTENDED and refused:
            out.append(f"**{m.system} {where}**: {refused:,} CAS refused in an uncontended loop "
                       "(each task owns its key: none should be)")
        if probe or m.elapsed_s <= 0:
            continue
        loads = m.client_loads()
        if loads and max(loads) >= CLIENT_SATURATION:
            near_core.setdefault(m.system, []).append(f"{where} ({max(loads):.0%})")
        busy_cores = m.machine_busy * m.cores
        client_cores = m.client_cpu_s / m.elapsed_s
        if m.machine_busy >= MACHINE_SATURATION and client_cores >= CLIENT_SHARE * busy_cores:
            client_bound.setdefault(m.system, []).append(f"{where} ({client_cores / busy_cores:.0%})")
        if m.machine_busy >= MACHINE_SATURATION and m.other_cores >= OTHER_LOAD_SHARE * m.cores:
            other_load.setdefault(m.system, []).append(f"{where} ({m.other_cores:.2f})")
    for system, where in near_core.items():
        out.append(f"**{system}**: a client process used nearly a whole core (busiest process, share "
                   f"of a core) in {', '.join(where)}: these throughputs may measure the client.")
    for system, where in client_bound.items():
        out.append(f"**{system}**: the machine was saturated and the client processes used most of "
                   f"its busy CPU (clients' share) in {', '.join(where)}: the load generator "
                   "competes with the servers for the cores, and the servers alone would do more.")
    for system, where in other_load.items():
        out.append(f"**{system}**: the machine was saturated and processes outside this benchmark "
                   f"(or the idle system) used cores (cores used by them) in {', '.join(where)}: "
                   "these figures are lower than on a quiet machine.")
    return out


def render(run: BenchRun, note: str = "") -> str:
    cfg = run.config
    mi = run.machine
    lines = ["# Consistency benchmark: ringkv's consensus path against etcd", ""]
    if note:
        lines += [f"> **{note}**", ""]
    lines += [
        f"Measured {mi['date']} by `{run.command or 'ringkv bench consistency'}` on {mi['cores']} "
        f"cores ({mi['cpu']}), Python {mi['python']}; client libraries {mi['clients']}. Load "
        f"average when the run started: {mi['load']}"
        + (f"; when it ended: {mi['load_end']}" if "load_end" in mi else "")
        + f". The run took {run.ended - run.started:,.0f} s"
        + (f" ({time.strftime('%H:%M', time.localtime(run.started))} to "
           f"{time.strftime('%H:%M', time.localtime(run.ended))})." if run.ended else "."),
        "",
        "## Setup",
        "",
        "| system | version | settings |",
        "|---|---|---|",
        *(f"| {s} | {run.versions[s]} | {run.settings[s]} |" for s in _systems(run)),
        "",
        "What each operation is:",
        "",
        *_operations_table(),
        "",
        f"- Both systems run at once on this machine's loopback, started by the benchmark; the "
        f"same {cfg.processes} client processes and {cfg.clients} concurrent tasks "
        f"({cfg.clients // cfg.processes} or so per process, asyncio, closed loop, no think time) "
        "measure both, each task talking to node or member (task number mod 3)"
        + (": for ringkv, through one token-aware client per process (`--ringkv-client token-aware`: "
           "ringkv's own asyncio client, `ringkv.client.AsyncClient(token_aware=True)`, with the "
           "operations of the table above as its methods `set`, `incr`, `get_versions`, `cas` and "
           "`get(consistency=\"SERIAL\")`), which sends each consensus command to its key's proposer, "
           "so no node forwards one; the table's redis-py column does not apply." if cfg.ringkv_client == "token-aware"
           else "."),
        f"- Each phase is {cfg.operations:,} operations over all clients"
        + (f", or {cfg.duration_s:g} s if that comes first" if cfg.duration_s else "")
        + f". {_repeats(cfg.repeats)}; in each, the tests run in the order of the tables below and "
        "the systems take turns within each test, the first one rotating from repeat to repeat.",
        f"- Keys: SET and Put pick uniformly among {cfg.keys:,} keys; INCR, CAS and the "
        "linearizable reads use one key per task (the reads read the CAS keys), fresh in every "
        f"repeat; the contended CAS puts every task on one of {cfg.hot_keys} keys. Values are "
        f"{cfg.value_size} bytes.",
        "- A CAS loop reads its key's version once (not timed), then sends each CAS with the "
        "version the previous one answered: uncontended, every CAS should apply.",
        "- Latency is measured per request in the client (HdrHistogram, microseconds). Figures are "
        "medians over the repeats; the ratios are per repeat, and their median.",
        "- **Durability is not alike.** etcd fsyncs every write to a majority's WAL before it "
        "answers. ringkv's acceptors store promises and acceptances before answering, written to "
        "the OS (`sync = interval`, the default: fsync every 100 ms), as its Dynamo writes are "
        "(docs/consistency.md).",
        "",
        "## Targets",
        "",
        *targets_table(run),
        "",
        f"## Results (medians of {_repeats(cfg.repeats)})" if cfg.repeats > 1 else "## Results (one repeat)",
        "",
        *results_table(run),
        "",
        "Refused: a CAS whose expected version had changed (it answers the current one). Gave up: "
        "ringkv answered that other proposers kept winning the key for 8 rounds (nothing applied). "
        "Failed: an error or a timeout, or a wrong answer (an INCR that did not add one, a "
        "linearizable read that found no value).",
        "",
        "## Every repeat (ops/s, p99 ms)",
        "",
        *repeats_table(run),
        "",
        "## Contended CAS",
        "",
        *contended_table(run),
        "",
        "## Consensus counters (INFO ringkv, all nodes, all repeats)",
        "",
        *counters_table(run),
        "",
        "Leased: a command chosen in one round trip (then committed in one more) at the ballot its proposer's lease allowed "
        "(`paxos_leased` / `paxos_commands`). Retries: rounds lost to another ballot or a refused "
        "lease, each followed by a back-off and a full round. Stale leases: leased proposals "
        "refused because an acceptor held a write the lease had not seen. Forwarded: commands a "
        "node received from another node because it is the key's first replica; a task whose node is "
        "its key's first replica skips that hop, answers sooner and so takes more of a phase's "
        "operations, which puts the share below the 2/3 of keys whose first replica is another "
        "node. The counters are "
        "read before a phase's tasks set up and after they finish, so they include each task's one "
        "untimed setup request (a GETV before a CAS loop, a SERIAL GET before a read loop).",
        "",
    ]
    if run.probes:
        lines += ["## One client, no queueing", "",
                  f"One client process with one task, {cfg.probe_operations:,} operations per "
                  "test, after the repeats: latencies are round trips and the work on them, "
                  "without waiting behind other requests.", "", *probe_table(run), ""]
    lines += ["## Round trips: what each operation costs", "", *round_trips(run), ""]
    if run.profile:
        lines += ["## Where the ringkv nodes' CPU goes (INCR)", "", *run.profile, ""]
    lines += [
        "## Who used the CPU",
        "",
        "Medians over the repeats. Client processes: CPU time over wall time of each (100 % is a "
        "whole core). Server cores: user + system time of the measured system's processes over the "
        "phase's wall time. Other processes: the machine's busy cores less the clients' and the "
        "servers' (the idle system, the harness, anything else on the machine).",
        "",
        *cpu_table(run),
        "",
        "## Warnings",
        "",
    ]
    found = warnings(run)
    lines += [f"- {w}" for w in found] if found else [
        "None: no operation failed, no uncontended CAS was refused, no client process reached "
        f"{CLIENT_SATURATION:.0%} of a core, and nothing else took a share of a saturated machine."]
    lines += [
        "",
        "## Reading these figures (written by hand after the run)",
        "",
        "_To be written from the tables above: the two verdicts, what share of INCR and CAS took "
        "the one-round-trip (leased) path, what a replica round trip costs (unloaded probe), "
        "where the nodes' CPU goes (profile), and whether the clients or the machine limited "
        "the run._",
    ]
    return "\n".join(lines) + "\n"
