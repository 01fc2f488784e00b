"""bench: measure VMs against containers and a native baseline on a real lab host."""

__version__ = "0.1.0"
