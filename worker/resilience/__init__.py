"""What keeps a send exactly-once and within bounds: the circuit breaker, the global
rate limiter, worker liveness, uncertain-send settlement and beat's sweeps."""
