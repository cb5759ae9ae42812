"""The chaos suite: a real cluster of `ringkv serve` processes under faults, every client
operation recorded, and checkers that read the history afterwards (docs/reliability.md).

    schedule.py   a seeded fault schedule (pure): which fault, on which nodes, when
    nemesis.py    applies a schedule to a LocalCluster: SIGKILL, SIGSTOP, RINGKV.FAULT,
                  rolling restarts; counts the faults that took effect
    workloads.py  client processes (register, set, counter, cas-register) that record every
                  operation
    history.py    the history: one entry per operation, saved as JSON
    checker.py    what must hold in a history and the state read after healing (pure)
    linearizability.py
                  whether a history is linearizable against a model (pure; Wing-Gong search)
    runner.py     one run: start, load + faults, heal, repair, final reads, check, save
    command.py    `ringkv chaos`

A run's seed fixes its schedule and every client's choices; the timing of real processes does
not replay, so a replay runs the same faults in the same order against different interleavings.
"""
