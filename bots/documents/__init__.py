"""@documents: a room's documents filed in its WebDAV folder, named, versioned, searchable.

``bot`` files what is posted and binds rooms to folders; ``library`` holds the
commands on a folder's documents; ``links`` the share links (served by the portal);
``access`` and ``requests`` the access requests
(``!accès``, with the portal); ``webdav`` is the WebDAV client; ``naming`` the naming
rules; ``extract`` reads their text for search.
"""

# The folder commands register themselves on ``documents_commands``: importing the package
# gives the whole bot, whichever of its modules is asked for.
from maillage.bots.documents import access as access
from maillage.bots.documents import library as library
from maillage.bots.documents import links as links
from maillage.bots.documents.circuits import commands as commands
