"""Event-sourced aggregates: every state change is an event."""
