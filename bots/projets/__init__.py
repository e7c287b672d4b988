"""@projets: a room's project as a CalDAV task list, used from the room and from any task app.

``bot`` holds the bot and its tables, ``tasks`` the VTODO helpers, ``index`` the tasks kept
in the bots' database, ``commands`` the commands.
"""

# The commands register themselves on the bot's command sets: importing the package gives the whole bot.
from maillage.bots.projets import commands as commands
