"""cgroup access for bench: layout detection and per-instance cgroups on v1 and v2 hosts."""
