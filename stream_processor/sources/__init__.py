"""Where a streaming run's events come from: the Socket.IO and event-stream clients,
and the recordings the generator writes."""
