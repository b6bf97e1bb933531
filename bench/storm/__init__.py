"""The storm benchmark: the gateway vs the official OpenAI SDK in a rate-limit storm, two scenarios.

* compressed (issue 3, the default): offered load at 90% and 150% of qwen3-max's total capacity
  across three simulated accounts, time-compressed 20x (a minute lasts 3 s). Two clients, one
  after the other, on the same simulator:
  - gateway: the OpenAI SDK (default retries) at the built Worker under `wrangler dev`, model
    qwen3-max; the gateway rotates accounts, schedules admission and downgrades along
    qwen3-max -> qwen-plus -> qwen-turbo.
  - direct:  the OpenAI SDK (default retries) straight at the simulator's DashScope endpoint,
    round-robin over the four account keys, model qwen3-max, no fallback.
* realtime (issue 8, `--scenario realtime`): DashScope's published qwen3-max limits (600 rpm,
  10 rps, 1M tpm, surge protection) at real speed on two good accounts and one whose free quota
  is exhausted, 90% and 150% of 20 requests/s, 30% of requests streamed, gateway only by default.
* `--clients` may add `batch`: the gateway again, the SDK sending `x-gateway-fallback: none` and
  `x-gateway-max-wait-ms: 60000` (a batch job that queues for qwen3-max, within the model's
  `deadline_ms`, rather than take a lower model).

Run through bench/storm.sh (it builds the simulator and the venv, then runs
`python -m bench.storm`). Prints a markdown table and, unless --no-write, writes the scenario's
section of BENCHMARKS.md ("Storm: gateway vs direct SDK (issue 3)" or "Real-time storm at
DashScope's limits (issue 8)"). Everything it starts (simulator, wrangler and workerd) runs in
its own process group on 127.0.0.1 ephemeral ports and is stopped on exit, error or signal.

Modules: scenario (each scenario's accounts, limits and load as data; the servers' configs), load (the open-loop client
and what its requests got), report (tables and the BENCHMARKS.md section), __main__ (the runs).
"""
