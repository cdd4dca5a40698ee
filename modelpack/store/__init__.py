"""The SQL store behind the registry and tracking (imported only when one of them is used)."""
