"""Built-in deployers, importable as ``modelpack.deployers.<name>``."""
