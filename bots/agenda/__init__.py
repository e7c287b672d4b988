"""@agenda: a room's shared calendar on CalDAV, used from the room and from any calendar app.

``bot`` holds the commands; ``dates`` reads dates and times written in French.
"""
