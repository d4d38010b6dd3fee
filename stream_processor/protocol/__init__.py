"""The replay protocol that clients and the server share: its vocabulary, the event
stream's wire format, and the token and Host rules (the server's and the run's dashboard's).
Neither side's code lives here: nothing in this package imports serving or sources."""
