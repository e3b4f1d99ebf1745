"""Running tasks: one task run in a sandbox and its grading (`evaluate`), where runs execute
(`executors`: this machine, or Ray with `ray_executor` and `ray_cluster`), the agent's source
(`agent_source`), and `ratchet bench run` (`bench_run`)."""
