"""pepc: a policy compiler and reconciler for XDP packet filtering."""

__version__ = "0.1.0"
