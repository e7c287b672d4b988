"""@agenda: a room's shared calendar on CalDAV, used from the room and from any calendar app.

``bot`` holds the commands; ``dates`` reads dates and times written in French.
"""

# The commands register themselves on ``agenda_commands``: importing the package gives the whole bot.
from maillage.bots.agenda import commands as commands
