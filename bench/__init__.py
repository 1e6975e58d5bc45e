"""``make bench``: the gateway measured side by side with what the machine allows."""
