"""The running daemon's engine: rule runner, action gate, budget, events, state store, scheduler, probe pool."""
