"""Balance and credit-expiry checks, the pure alert rules, alerts and their channels."""
