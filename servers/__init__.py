"""Built-in servers, importable as ``modelpack.servers.<name>``."""
