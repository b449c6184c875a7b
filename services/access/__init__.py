"""Who may call: API keys, the key file and its tool, rate limits, per-caller upload slots."""
