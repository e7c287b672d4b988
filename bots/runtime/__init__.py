"""The bot runtime: what every service bot inherits.

A bot is one small class (``bot.Bot``) with declarative commands
(``commands.CommandSet``); the runtime gives it its Matrix account, end-to-end
encryption and cross-signing, exactly-once handling in timeline order
(``bot``, ``sync``, ``store``), its room binding kept in room state
(``binding``), encrypted attachments (``media``), help, French errors, metrics
and health (``metrics``).
"""
