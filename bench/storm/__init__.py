"""The storm benchmark (issue 3): the gateway vs the official OpenAI SDK straight at the upstream.

Offered load at 90% and 150% of qwen3-max's total capacity across three simulated accounts,
time-compressed 20x (a minute lasts 3 s), sent on a fixed open-loop schedule (requests fire at a
constant rate whatever the answers). Two clients, one after the other, on the same simulator:

* gateway: the OpenAI SDK (default retries) at the built Worker under `wrangler dev`, model
  qwen3-max; the gateway rotates accounts, schedules admission and downgrades along
  qwen3-max -> qwen-plus -> qwen-turbo.
* direct:  the OpenAI SDK (default retries) straight at the simulator's DashScope endpoint,
  round-robin over the four account keys, model qwen3-max, no fallback.

Run through bench/storm.sh (it builds the simulator and the venv, then runs
`python -m bench.storm`). Prints a markdown table and, unless --no-write, writes the section
"Storm: gateway vs direct SDK (issue 3)" of BENCHMARKS.md. Everything it starts (simulator,
wrangler and workerd) runs in its own process group on 127.0.0.1 ephemeral ports and is stopped
on exit, error or signal.

Modules: scenario (the accounts, limits and the servers' configs), load (the open-loop client
and what its requests got), report (tables and the BENCHMARKS.md section), __main__ (the runs).
"""
