"""The one road for status changes (state machine, events, metrics, app callbacks) and
store writes retried through an outage."""
