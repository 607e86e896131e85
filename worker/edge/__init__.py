"""The web process's edge: who may call, how much they may send, where callbacks may go."""
