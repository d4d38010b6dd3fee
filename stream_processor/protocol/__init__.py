"""The replay protocol that clients and the server share: its vocabulary and the event
stream's wire format. Neither side's code lives here."""
