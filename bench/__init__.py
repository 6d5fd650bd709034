"""The project's benchmark: the gateway at district scale against bare relays (docs/benchmark.md).

Separate processes on one machine, all on loopback: a mosquitto per system under
test, the system (the gateway from its CLI, durable or `--volatile`; a bare relay
on gmqtt; one on aiomqtt), an open-loop load generator (`bench.generator`) and a
sink (`bench.sink`), driven by a coordinator (`bench.run`). `bench.load` is the
seeded schedule and the routing oracle, `bench.stats` the accounting,
`bench.report` the outputs. Run it with `scripts/bench` (`bench.cli`).
"""
