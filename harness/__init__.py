"""Test harnesses that do not ship in the wheel: a cluster of hosts in network namespaces
(`cluster`, `cluster_faults`, `netns`, `rabbitmq_node`) and a headless Chromium (`browser`).
The tests and benchmarks use them; `make cluster` runs the cluster's faults."""
