"""A fleet of edges sharing bans through Redis (`fleet_redis`).

messages.py: what the edges tell each other, and the checks of what comes back (pure).
store.py: the fleet's keys and stream in Redis. link.py: the publisher and follower threads.
edge.py: this edge's guard as the link's sink; start_fleet() wires it all for `fastban run`.
"""
