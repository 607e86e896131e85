"""The send path: claim, gates (guard, breaker, copy window, rate limit), the gateway
call, the record of its answer; and cancelling what a gateway holds."""
