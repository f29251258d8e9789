"""enricher: a Socket.IO proxy that sends browsers complete new rooms."""

__version__ = "0.1.0"
